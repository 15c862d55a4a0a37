// The only pybind11 translation unit: argument validation, GIL release and docstrings for the
// private module `fastckpt._native`. No hashing logic lives here.
//
// Data crosses the boundary in two ways:
//  * Python buffers (bytes, bytearray, memoryview, numpy arrays, mmap): held with PyBUF_SIMPLE,
//    which refuses non-contiguous exporters, for the whole call.
//  * Raw (address, nbytes) pairs, for torch tensors (which export no buffer). SAFETY: the address
//    is trusted. The caller (fastckpt._tensors) must pass a CPU tensor's data_ptr() and its exact
//    byte size, and must keep the tensor alive and unmodified until the call returns. The native
//    side reads exactly [address, address + nbytes) and never writes.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <system_error>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/xxh3.hpp"
#include "cpu/backend.hpp"
#include "cpu/crc32.hpp"
#include "cpu/cuda_emulation.hpp"
#include "cpu/diff.hpp"
#include "cpu/gf256.hpp"  // Reed-Solomon parity
#include "cpu/parity_scan.hpp"  // the fused protect pass
#include "cpu/mapped_file.hpp"
#include "cpu/sumsq.hpp"
#include "cuda/backend.hpp"

namespace py = pybind11;
using namespace fastckpt;

namespace {

// Inputs smaller than this are hashed with the GIL held: releasing it costs more than it saves.
constexpr size_t kGilReleaseBytes = 64 * 1024;
constexpr size_t kMinLeafSize = 64;
constexpr size_t kMaxLeafSize = size_t{1} << 30;

class BufferView {
 public:
  explicit BufferView(const py::handle& obj) {
    if (PyObject_GetBuffer(obj.ptr(), &view_, PyBUF_SIMPLE) != 0) {
      PyErr_Clear();
      throw py::type_error(
          "expected a C-contiguous bytes-like object (bytes, bytearray, memoryview, numpy array, "
          "mmap); for a strided array pass numpy.ascontiguousarray(x), for a tensor use hash_tensor()");
    }
  }
  ~BufferView() { PyBuffer_Release(&view_); }
  BufferView(const BufferView&) = delete;
  BufferView& operator=(const BufferView&) = delete;
  const uint8_t* data() const { return static_cast<const uint8_t*>(view_.buf); }
  size_t size() const { return static_cast<size_t>(view_.len); }

 private:
  Py_buffer view_{};
};

void check_leaf_size(size_t leaf_size) {
  if (leaf_size < kMinLeafSize || leaf_size > kMaxLeafSize || (leaf_size & (leaf_size - 1)) != 0) {
    throw py::value_error("leaf_size must be a power of two between 64 and 2**30, got " +
                          std::to_string(leaf_size) + " (the default is 65536)");
  }
}

cpu::LongAccumulateFn loop_for(const std::string& isa) {
  try {
    return cpu::long_accumulate_for(isa.empty() ? cpu::default_isa() : isa);
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
}

// Leaf digests are returned as packed little-endian u64 bytes: no numpy import on the hot path of
// the CLI, and memoryview(...).cast("Q") reads them for free on little-endian hosts.
py::bytes leaf_digests_of(const uint8_t* data, size_t len, size_t leaf_size, int threads,
                          cpu::LongAccumulateFn loop, bool populate = false) {
  const size_t n_leaves = (len + leaf_size - 1) / leaf_size;
  PyObject* out = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(n_leaves * 8));
  if (out == nullptr) throw py::error_already_set();
  // The new bytes object is not yet visible to any other thread, so filling it without the GIL is safe.
  auto* dst = reinterpret_cast<uint64_t*>(PyBytes_AS_STRING(out));
  if (len >= kGilReleaseBytes) {
    py::gil_scoped_release release;
    cpu::leaf_digests(data, len, leaf_size, dst, threads, loop, populate);
  } else {
    cpu::leaf_digests(data, len, leaf_size, dst, threads, loop);
  }
  return py::reinterpret_steal<py::bytes>(out);
}

// Maps `path` read-only without the GIL; a failure is an OSError naming the file.
std::unique_ptr<cpu::MappedFile> map_file(const std::string& path) {
  try {
    py::gil_scoped_release release;
    return std::make_unique<cpu::MappedFile>(path);
  } catch (const std::system_error& e) {
    errno = e.code().value();
    PyErr_SetFromErrnoWithFilename(PyExc_OSError, path.c_str());
    throw py::error_already_set();
  }
}

py::int_ u128_to_int(xxh3::U128 v) {
  py::int_ high(v.high), low(v.low);
  return py::reinterpret_steal<py::int_>(
      PyNumber_Or(py::reinterpret_steal<py::object>(PyNumber_Lshift(high.ptr(), py::int_(64).ptr())).ptr(),
                  low.ptr()));
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "fastckpt native core (private; use the fastckpt package API).";

  m.def(
      "xxh3_64",
      [](const py::object& data) {
        BufferView buf(data);
        if (buf.size() >= kGilReleaseBytes) {
          py::gil_scoped_release release;
          return cpu::hash64(buf.data(), buf.size(), loop_for(""));
        }
        return cpu::hash64(buf.data(), buf.size(), loop_for(""));
      },
      py::arg("data"), "XXH3-64 (seed 0) of a C-contiguous buffer, as an int.");

  m.def(
      "xxh3_128",
      [](const py::object& data) {
        BufferView buf(data);
        xxh3::U128 v;
        {
          py::gil_scoped_release release;
          v = xxh3::hash128(buf.data(), buf.size());
        }
        return u128_to_int(v);
      },
      py::arg("data"), "XXH3-128 (seed 0) of a C-contiguous buffer, as an int (high << 64 | low).");

  m.def(
      "leaf_digests",
      [](const py::object& data, size_t leaf_size, int threads, const std::string& isa) {
        check_leaf_size(leaf_size);
        auto loop = loop_for(isa);
        BufferView buf(data);
        return leaf_digests_of(buf.data(), buf.size(), leaf_size, threads, loop);
      },
      py::arg("data"), py::arg("leaf_size") = 65536, py::arg("threads") = 0, py::arg("isa") = "",
      "XXH3-64 of each leaf_size-byte leaf of a C-contiguous buffer, as packed little-endian u64.");

  m.def(
      "leaf_digests_at",
      [](uintptr_t address, size_t nbytes, size_t leaf_size, int threads, const std::string& isa) {
        check_leaf_size(leaf_size);
        if (address == 0 && nbytes != 0) throw py::value_error("null address with a non-zero length");
        auto loop = loop_for(isa);
        return leaf_digests_of(reinterpret_cast<const uint8_t*>(address), nbytes, leaf_size, threads, loop);
      },
      py::arg("address"), py::arg("nbytes"), py::arg("leaf_size") = 65536, py::arg("threads") = 0,
      py::arg("isa") = "",
      "Like leaf_digests, for host memory given as (address, nbytes). The caller keeps it alive.");

  m.def(
      "hash_file",
      [](const std::string& path, size_t leaf_size, int threads, const std::string& isa) {
        check_leaf_size(leaf_size);
        auto loop = loop_for(isa);
        const std::unique_ptr<cpu::MappedFile> file = map_file(path);
        py::bytes leaves = leaf_digests_of(file->data(), file->size(), leaf_size, threads, loop, /*populate=*/true);
        return py::make_tuple(file->size(), leaves);
      },
      py::arg("path"), py::arg("leaf_size") = 65536, py::arg("threads") = 0, py::arg("isa") = "",
      "mmap a file and return (size, leaf digests as packed little-endian u64).");

  m.def("available_isas", &cpu::available_isas, "CPU instruction sets usable here, narrowest first.");
  m.def("default_isa", &cpu::default_isa, "The instruction set the CPU backend uses by default.");

  m.def(
      "cuda_status",
      []() {
        const cuda::Status s = cuda::status();
        py::dict d;
        d["compiled"] = s.compiled;
        d["usable"] = s.usable;
        d["device_count"] = s.device_count;
        d["reason"] = s.reason;
        d["architectures"] = s.architectures;
        return d;
      },
      "Whether the CUDA backend is compiled in and usable. Never raises; never needs a GPU.");

  // ---- bitwise diff (GPU engine / diff issues) ----
  // The statistics of diff::Partial as a dict; mean/RMS are derived in Python (fastckpt.tensordiff)
  // from the exact sums so that every backend shares that last step too.
  auto diff_stats = [](const diff::Partial& p, uint64_t n_elements, bool float_stats) {
    py::dict d;
    d["n_elements"] = n_elements;
    d["n_different"] = p.n_diff;
    d["first_diff_index"] = p.first_diff == diff::kNoIndex ? py::int_(-1) : py::int_(p.first_diff);
    d["float_stats"] = float_stats;
    d["sum_abs_diff"] = p.sum_abs;
    d["sum_sq_diff"] = p.sum_sq;
    d["max_abs_diff"] = p.max_abs;
    d["max_rel_diff"] = p.max_rel;
    d["max_ulp"] = p.max_ulp;
    d["nan_inf_introduced"] = p.introduced;
    d["nan_inf_removed"] = p.removed;
    return d;
  };
  auto find_diff_dtype = [](const std::string& name) -> const cpu::DiffDType& {
    try {
      return cpu::diff_dtype(name);
    } catch (const std::invalid_argument& e) {
      throw py::value_error(e.what());
    }
  };
  auto diff_host = [diff_stats](const uint8_t* a, const uint8_t* b, size_t nbytes, const cpu::DiffDType& dt,
                                int threads, bool norm_a, const std::string& isa_name) {
    cpu::DiffIsa isa;
    try {
      isa = cpu::diff_isa(isa_name);
    } catch (const std::invalid_argument& e) {
      throw py::value_error(e.what());
    }
    if (nbytes % dt.size != 0) {
      throw py::value_error("byte length " + std::to_string(nbytes) + " is not a multiple of the " +
                            std::to_string(dt.size) + "-byte element size of " + dt.name);
    }
    cpu::DiffResult r;
    if (nbytes >= kGilReleaseBytes) {
      py::gil_scoped_release release;
      r = cpu::diff_buffers(a, b, nbytes, dt, threads, norm_a, isa);
    } else {
      r = cpu::diff_buffers(a, b, nbytes, dt, threads, norm_a, isa);
    }
    py::dict d = diff_stats(r.p, nbytes / dt.size, dt.kind != diff::Kind::kBits);
    if (norm_a) d["sum_sq_a"] = r.has_sum_sq_a ? py::object(py::float_(r.sum_sq_a)) : py::object(py::none());
    return d;
  };

  m.def(
      "diff_dtypes",
      []() {
        py::dict d;
        for (const auto& dt : cpu::diff_dtypes()) d[dt.name] = py::make_tuple(dt.kind != diff::Kind::kBits, dt.size);
        return d;
      },
      "dtype names the diff accepts -> (has float statistics, bytes per element).");

  m.def(
      "diff_buffers",
      [find_diff_dtype, diff_host](const py::object& a, const py::object& b, const std::string& dtype, int threads,
                                   bool norm_a, const std::string& isa) {
        const cpu::DiffDType& dt = find_diff_dtype(dtype);
        BufferView va(a), vb(b);
        if (va.size() != vb.size()) {
          throw py::value_error("buffers differ in length (" + std::to_string(va.size()) + " and " +
                                std::to_string(vb.size()) + " bytes): compare equal-shaped tensors only");
        }
        return diff_host(va.data(), vb.data(), va.size(), dt, threads, norm_a, isa);
      },
      py::arg("a"), py::arg("b"), py::arg("dtype"), py::arg("threads") = 0, py::kw_only(), py::arg("norm_a") = false,
      py::arg("isa") = "",
      "Bitwise diff of two equal-length C-contiguous buffers holding elements of `dtype` (a name "
      "from diff_dtypes()), on the CPU. Returns the raw statistics (see docs/DIFF_SEMANTICS.md); with "
      "norm_a, also 'sum_sq_a': the canonical sum of a*a over A's finite elements when the buffers "
      "differ and the dtype has float statistics, else None. `isa` picks a kernel from diff_isas() for tests "
      "and benchmarks (\"\" = the widest usable); results never depend on it or on `threads`.");

  m.def("diff_isas", &cpu::diff_isas, "The diff kernels usable on this CPU, narrowest first.");

  m.def(
      "diff_buffers_at",
      [find_diff_dtype, diff_host](uintptr_t a_address, uintptr_t b_address, size_t nbytes, const std::string& dtype,
                                   int threads, bool norm_a, const std::string& isa) {
        const cpu::DiffDType& dt = find_diff_dtype(dtype);
        if ((a_address == 0 || b_address == 0) && nbytes != 0)
          throw py::value_error("null address with a non-zero length");
        return diff_host(reinterpret_cast<const uint8_t*>(a_address), reinterpret_cast<const uint8_t*>(b_address),
                         nbytes, dt, threads, norm_a, isa);
      },
      py::arg("a_address"), py::arg("b_address"), py::arg("nbytes"), py::arg("dtype"), py::arg("threads") = 0,
      py::kw_only(), py::arg("norm_a") = false, py::arg("isa") = "",
      "Like diff_buffers, for host memory given as two addresses and one byte length (raw-pointer "
      "contract at the top of this file: the caller keeps both ranges alive and unmodified).");

  // ---- zip CRC-32 (formats / verify issue) ----
  // zlib-compatible CRC-32 (polynomial 0xEDB88320). `isa` picks an implementation for tests and
  // benchmarks ("" = the fastest usable one); results never depend on it or on `threads`.
  {
    auto crc_fn_for = [](const std::string& isa) {
      try {
        return cpu::crc32_for(isa);
      } catch (const std::invalid_argument& e) {
        throw py::value_error(e.what());
      }
    };
    auto check_crc_value = [](long long value, const char* what) {
      if (value < 0 || value > 0xFFFFFFFFll)
        throw py::value_error(std::string(what) + " must be a CRC-32 value in [0, 2**32), got " +
                              std::to_string(value));
      return static_cast<uint32_t>(value);
    };

    m.def(
        "crc32",
        [crc_fn_for, check_crc_value](const py::object& data, long long value, int threads,
                                      const std::string& isa) {
          const uint32_t init = check_crc_value(value, "value");
          auto fn = crc_fn_for(isa);
          BufferView buf(data);
          const uint64_t offset = 0, length = buf.size();
          uint32_t out = 0;
          if (buf.size() >= kGilReleaseBytes) {
            py::gil_scoped_release release;
            cpu::crc32_ranges(buf.data(), &offset, &length, &init, 1, &out, threads, fn);
          } else {
            out = fn(init, buf.data(), buf.size());
          }
          return out;
        },
        py::arg("data"), py::arg("value") = 0, py::kw_only(), py::arg("threads") = 0, py::arg("isa") = "",
        "CRC-32 of a C-contiguous buffer, continuing from `value`; equal to zlib.crc32(data, value).\n"
        "Inputs over 8 MiB are split over `threads` workers (0 = all cores) and joined with crc32_combine.");

    m.def(
        "crc32_ranges",
        [crc_fn_for](const py::object& data, const std::vector<long long>& offsets,
                     const std::vector<long long>& lengths, int threads, const std::string& isa) {
          if (offsets.size() != lengths.size())
            throw py::value_error("crc32_ranges: offsets and lengths must have the same length, got " +
                                  std::to_string(offsets.size()) + " and " + std::to_string(lengths.size()));
          auto fn = crc_fn_for(isa);
          BufferView buf(data);
          std::vector<uint64_t> off(offsets.size()), len(lengths.size());
          uint64_t total = 0;
          for (size_t i = 0; i < offsets.size(); ++i) {
            if (offsets[i] < 0 || lengths[i] < 0 || static_cast<uint64_t>(offsets[i]) > buf.size() ||
                static_cast<uint64_t>(lengths[i]) > buf.size() - static_cast<uint64_t>(offsets[i]))
              throw py::value_error("crc32_ranges: range " + std::to_string(i) + " [" + std::to_string(offsets[i]) +
                                    ", +" + std::to_string(lengths[i]) + ") is outside the buffer of " +
                                    std::to_string(buf.size()) + " bytes");
            off[i] = static_cast<uint64_t>(offsets[i]);
            len[i] = static_cast<uint64_t>(lengths[i]);
            total += len[i];
          }
          std::vector<uint32_t> out(off.size());
          if (total >= kGilReleaseBytes) {
            py::gil_scoped_release release;
            cpu::crc32_ranges(buf.data(), off.data(), len.data(), nullptr, off.size(), out.data(), threads, fn);
          } else {
            cpu::crc32_ranges(buf.data(), off.data(), len.data(), nullptr, off.size(), out.data(), 1, fn);
          }
          return out;
        },
        py::arg("data"), py::arg("offsets"), py::arg("lengths"), py::kw_only(), py::arg("threads") = 0,
        py::arg("isa") = "",
        "CRC-32 (from 0) of each range data[offsets[i]:offsets[i] + lengths[i]], as a list of ints.\n"
        "Ranges are hashed in parallel (large ones split and recombined); they may overlap.");

    m.def(
        "crc32_combine",
        [check_crc_value](long long crc1, long long crc2, long long len2) {
          if (len2 < 0) throw py::value_error("crc32_combine: len2 must be >= 0, got " + std::to_string(len2));
          return cpu::crc32_combine(check_crc_value(crc1, "crc1"), check_crc_value(crc2, "crc2"),
                                    static_cast<uint64_t>(len2));
        },
        py::arg("crc1"), py::arg("crc2"), py::arg("len2"),
        "CRC-32 of A+B from crc32(A), crc32(B) and len(B) (like zlib's crc32_combine).");

    m.def("crc32_isas", &cpu::crc32_isas, "CRC-32 implementations usable here, slowest first.");
    m.def("crc32_default_isa", &cpu::crc32_default_isa, "The CRC-32 implementation used by default.");
  }

  // ---- run report (report issue) ----
  m.def(
      "sumsq_dtypes", []() {
        py::list out;
        for (const auto& d : cpu::sumsq_dtypes()) out.append(d.name);
        return out;
      },
      "dtype names sumsq_sequence accepts.");

  m.def(
      "sumsq_sequence",
      [](const py::list& buffers, const std::string& dtype, int threads) {
        const cpu::SumsqDType* dt;
        try {
          dt = &cpu::sumsq_dtype(dtype);
        } catch (const std::invalid_argument& e) {
          throw py::value_error(e.what());
        }
        const size_t k = buffers.size();
        if (k == 0) throw py::value_error("sumsq_sequence needs at least one buffer");
        if (buffers[0].is_none()) throw py::value_error("sumsq_sequence: the first buffer must not be None");
        std::vector<std::unique_ptr<BufferView>> views(k);
        std::vector<const uint8_t*> ptrs(k, nullptr);
        size_t nbytes = 0;
        for (size_t j = 0; j < k; ++j) {
          if (buffers[j].is_none()) continue;
          views[j] = std::make_unique<BufferView>(buffers[j]);
          if (j == 0) nbytes = views[j]->size();
          if (views[j]->size() != nbytes)
            throw py::value_error("sumsq_sequence: buffers differ in length (" + std::to_string(nbytes) + " and " +
                                  std::to_string(views[j]->size()) + " bytes)");
          // A zero-length buffer may have a null pointer; any non-null placeholder works (nothing is read).
          ptrs[j] = views[j]->data() ? views[j]->data() : reinterpret_cast<const uint8_t*>(&nbytes);
        }
        if (nbytes % dt->size != 0)
          throw py::value_error("sumsq_sequence: " + std::to_string(nbytes) + " bytes is not a whole number of " +
                                dtype + " elements (" + std::to_string(dt->size) + " bytes each)");
        std::vector<double> sq(k, 0.0), sq_diff(k > 0 ? k - 1 : 0, 0.0);
        {
          py::gil_scoped_release release;
          cpu::sumsq_sequence(ptrs.data(), k, nbytes, *dt, sq.data(), sq_diff.data(), threads);
        }
        return py::make_tuple(sq, sq_diff);
      },
      py::arg("buffers"), py::arg("dtype"), py::arg("threads") = 0,
      "Sums of squares of one tensor across consecutive checkpoints: buffers[j] holds its bytes in\n"
      "checkpoint j, or None when identical to buffers[j-1]. Returns (sum(X_j^2) for every j,\n"
      "sum((X_j - X_{j-1})^2) for j >= 1) with the fixed reduction order of csrc/cpu/sumsq.hpp.");

  // ---- Reed-Solomon parity (repair issue) ----
  // The engine of docs/FORMAT.md "Parity (Reed-Solomon)"; fastckpt.parity is its public API. Parity and
  // rebuilt leaves come back as new bytes objects, filled without the GIL (nothing else sees them yet).
  {
    auto rs_kernels = [](const std::string& isa) -> const gf::Kernels& {
      try {
        return gf::kernels_for(isa.empty() ? gf::default_isa() : isa);
      } catch (const std::invalid_argument& e) {
        throw py::value_error(e.what());
      }
    };
    auto rs_code = [](uint64_t size, size_t leaf_size, int k, int m, size_t groups) {
      check_leaf_size(leaf_size);
      gf::Code code{leaf_size, k, m, groups};
      try {
        gf::check_code(code, size);
      } catch (const std::invalid_argument& e) {
        throw py::value_error(e.what());
      }
      return code;
    };
    auto new_bytes = [](size_t n) {
      PyObject* out = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(n));
      if (out == nullptr) throw py::error_already_set();
      return py::reinterpret_steal<py::bytes>(out);
    };
    auto bytes_ptr = [](py::bytes& b) { return reinterpret_cast<uint8_t*>(PyBytes_AS_STRING(b.ptr())); };

    m.def(
        "rs_encode",
        [=](const py::object& data, size_t leaf_size, int k, int m_, size_t groups, int threads, const std::string& isa) {
          const gf::Kernels& kern = rs_kernels(isa);
          BufferView buf(data);
          const gf::Code code = rs_code(buf.size(), leaf_size, k, m_, groups);
          py::bytes parity = new_bytes(static_cast<size_t>(m_) * groups * leaf_size);
          uint8_t* out = bytes_ptr(parity);
          py::gil_scoped_release release;
          gf::encode(buf.data(), buf.size(), code, out, nullptr, nullptr, threads, kern);
          return parity;
        },
        py::arg("data"), py::arg("leaf_size"), py::arg("k"), py::arg("m"), py::arg("groups"), py::arg("threads") = 0,
        py::arg("isa") = "",
        "Reed-Solomon parity of a C-contiguous buffer: m * groups leaves of leaf_size bytes, parity leaf\n"
        "r * groups + g for row r of group g (data leaf i is in group i % groups).");

    m.def(
        "rs_protect",
        [=](const py::object& data, size_t leaf_size, int k, int m_, size_t groups, int threads, const std::string& isa) {
          const gf::Kernels& kern = rs_kernels(isa);
          auto loop = loop_for("");
          BufferView buf(data);
          const gf::Code code = rs_code(buf.size(), leaf_size, k, m_, groups);
          py::bytes parity = new_bytes(static_cast<size_t>(m_) * groups * leaf_size);
          py::bytes digests = new_bytes((buf.size() + leaf_size - 1) / leaf_size * 8);
          uint8_t* out = bytes_ptr(parity);
          auto* dig = reinterpret_cast<uint64_t*>(bytes_ptr(digests));
          {
            py::gil_scoped_release release;
            gf::encode(buf.data(), buf.size(), code, out, dig, loop, threads, kern);
          }
          return py::make_tuple(digests, parity);
        },
        py::arg("data"), py::arg("leaf_size"), py::arg("k"), py::arg("m"), py::arg("groups"), py::arg("threads") = 0,
        py::arg("isa") = "",
        "Leaf digests (packed little-endian u64, as leaf_digests) and rs_encode parity in one pass over memory.");

    m.def(
        "rs_protect_file",
        [=](const std::string& path, size_t leaf_size, int k, int m_, size_t groups, int threads, const std::string& isa) {
          const gf::Kernels& kern = rs_kernels(isa);
          auto loop = loop_for("");
          check_leaf_size(leaf_size);
          const std::unique_ptr<cpu::MappedFile> file = map_file(path);
          const gf::Code code = rs_code(file->size(), leaf_size, k, m_, groups);
          py::bytes parity = new_bytes(static_cast<size_t>(m_) * groups * leaf_size);
          py::bytes digests = new_bytes((file->size() + leaf_size - 1) / leaf_size * 8);
          uint8_t* out = bytes_ptr(parity);
          auto* dig = reinterpret_cast<uint64_t*>(bytes_ptr(digests));
          {
            py::gil_scoped_release release;
            gf::encode(file->data(), file->size(), code, out, dig, loop, threads, kern);
          }
          return py::make_tuple(file->size(), digests, parity);
        },
        py::arg("path"), py::arg("leaf_size"), py::arg("k"), py::arg("m"), py::arg("groups"), py::arg("threads") = 0,
        py::arg("isa") = "",
        "mmap a file and return (size, leaf digests, parity) as rs_protect. k, m and groups must fit the\n"
        "file's size at the time it is opened (ValueError otherwise).");

    // The fused protect pass: with m == 0 there is no parity (k and groups are ignored).
    auto rs_scan_impl = [=](const uint8_t* data, size_t size, size_t leaf_size, int k, int m_, size_t groups,
                            const std::vector<std::pair<uint64_t, uint64_t>>& spans,
                            const std::vector<std::pair<uint64_t, uint64_t>>& crc_spans, int threads,
                            const std::string& isa, bool populate, int out_fd, uint64_t out_offset) {
      const gf::Kernels& kern = rs_kernels(isa);
      auto loop = loop_for("");
      check_leaf_size(leaf_size);
      if (m_ < 0) throw py::value_error("m must be >= 0 (0: no parity), got " + std::to_string(m_));
      gf::Code code{leaf_size, k, m_, groups};
      if (m_ > 0) code = rs_code(size, leaf_size, k, m_, groups);
      parity::ScanJob job{};
      job.leaf_size = leaf_size;
      job.code = m_ > 0 ? &code : nullptr;
      for (const auto& [o, n] : spans) job.leaf_spans.push_back({o, n});
      for (const auto& [o, n] : crc_spans) job.crc_spans.push_back({o, n});
      job.hash_loop = loop;
      job.crc = cpu::crc32_for("");
      job.threads = threads;
      job.populate = populate;
      job.out_fd = m_ > 0 ? out_fd : -1;
      job.out_offset = out_offset;
      // Streamed parity is not kept: holding it would cost ~5 % of the file in fresh pages.
      const bool keep_parity = m_ > 0 && out_fd < 0;
      py::bytes par = new_bytes(keep_parity ? static_cast<size_t>(m_) * groups * leaf_size : 0);
      py::bytes par_leaves = new_bytes(m_ > 0 ? static_cast<size_t>(m_) * groups * 8 : 0);
      py::bytes leaves = new_bytes((size + leaf_size - 1) / leaf_size * 8);
      py::bytes span_leaves = new_bytes(parity::total_span_leaves(job.leaf_spans, leaf_size) * 8);
      std::vector<uint32_t> crcs(crc_spans.size());
      job.parity = keep_parity ? bytes_ptr(par) : nullptr;
      job.parity_leaves = m_ > 0 ? reinterpret_cast<uint64_t*>(bytes_ptr(par_leaves)) : nullptr;
      job.file_leaves = reinterpret_cast<uint64_t*>(bytes_ptr(leaves));
      job.span_leaves = reinterpret_cast<uint64_t*>(bytes_ptr(span_leaves));
      job.crcs = crcs.data();
      try {
        py::gil_scoped_release release;
        parity::scan(data, size, job, kern);
      } catch (const std::invalid_argument& e) {
        throw py::value_error(e.what());
      } catch (const std::system_error& e) {
        errno = e.code().value();
        PyErr_SetFromErrno(PyExc_OSError);
        throw py::error_already_set();
      }
      return py::make_tuple(size, leaves, par, span_leaves, crcs, par_leaves);
    };

    m.def(
        "rs_scan",
        [=](const py::object& data, size_t leaf_size, int k, int m_, size_t groups,
            const std::vector<std::pair<uint64_t, uint64_t>>& spans,
            const std::vector<std::pair<uint64_t, uint64_t>>& crc_spans, int threads, const std::string& isa) {
          BufferView buf(data);
          return rs_scan_impl(buf.data(), buf.size(), leaf_size, k, m_, groups, spans, crc_spans, threads, isa, false,
                              -1, 0);
        },
        py::arg("data"), py::arg("leaf_size"), py::arg("k"), py::arg("m"), py::arg("groups"), py::arg("spans"),
        py::arg("crc_spans"), py::arg("threads") = 0, py::arg("isa") = "",
        "One pass over a C-contiguous buffer: returns (size, leaf digests, parity, span leaf digests, crcs,\n"
        "parity leaf digests). Leaf digests and parity are those of rs_protect (m == 0: no parity, b'');\n"
        "span leaf digests are leaf_digests(data[o:o+n]) of every (o, n) in spans, concatenated; crcs[i]\n"
        "is zlib.crc32 of crc_spans[i]; parity leaf digests are leaf_digests(parity, leaf_size). Every\n"
        "span must lie inside the buffer (ValueError otherwise).");

    m.def(
        "rs_scan_file",
        [=](const std::string& path, size_t leaf_size, int k, int m_, size_t groups,
            const std::vector<std::pair<uint64_t, uint64_t>>& spans,
            const std::vector<std::pair<uint64_t, uint64_t>>& crc_spans, int threads, const std::string& isa,
            int out_fd, uint64_t out_offset) {
          const std::unique_ptr<cpu::MappedFile> file = map_file(path);
          return rs_scan_impl(file->data(), file->size(), leaf_size, k, m_, groups, spans, crc_spans, threads, isa,
                              true, out_fd, out_offset);
        },
        py::arg("path"), py::arg("leaf_size"), py::arg("k"), py::arg("m"), py::arg("groups"), py::arg("spans"),
        py::arg("crc_spans"), py::arg("threads") = 0, py::arg("isa") = "", py::arg("out_fd") = -1,
        py::arg("out_offset") = 0,
        "rs_scan over an mmap of the file. k, m, groups and the spans must fit the file's size at the time\n"
        "it is opened (ValueError otherwise). With out_fd >= 0 (an open, writable file descriptor the caller\n"
        "keeps open) the parity is written there instead of returned (parity is b''), parity byte j at\n"
        "out_offset + j, group by group as it is computed, with write-back started early (OSError on a\n"
        "write error); its leaf digests are still returned.");

    m.def(
        "rs_reconstruct",
        [=](const py::object& data, uint64_t size, size_t leaf_size, int k, int m_, size_t groups,
            const py::object& parity, std::vector<uint64_t> damaged, std::vector<uint64_t> damaged_parity, int threads,
            const std::string& isa) {
          const gf::Kernels& kern = rs_kernels(isa);
          const gf::Code code = rs_code(size, leaf_size, k, m_, groups);
          BufferView buf(data);
          BufferView par(parity);
          const size_t want = static_cast<size_t>(m_) * groups * leaf_size;
          if (par.size() != want)
            throw py::value_error("parity holds " + std::to_string(par.size()) + " bytes but m * groups * leaf_size = " +
                                  std::to_string(want) + "; pass the parity made with these k, m, groups and leaf_size");
          gf::ReconstructPlan plan;
          try {
            plan = gf::plan_reconstruct(buf.size(), size, code, damaged, damaged_parity);
          } catch (const std::invalid_argument& e) {
            throw py::value_error(e.what());
          }
          py::bytes out = new_bytes(plan.rebuilt.size() * leaf_size);
          uint8_t* dst = bytes_ptr(out);
          {
            py::gil_scoped_release release;
            gf::reconstruct(buf.data(), buf.size(), size, code, par.data(), damaged_parity, plan, dst, threads, kern);
          }
          return py::make_tuple(plan.rebuilt, plan.lost, out);
        },
        py::arg("data"), py::arg("size"), py::arg("leaf_size"), py::arg("k"), py::arg("m"), py::arg("groups"),
        py::arg("parity"), py::arg("damaged"), py::arg("damaged_parity") = std::vector<uint64_t>{},
        py::arg("threads") = 0, py::arg("isa") = "",
        "Rebuild damaged data leaves of the original byte range [0, size) from the damaged buffer and the\n"
        "parity. Leaves not wholly inside data (a truncated buffer) count as damaged. Returns (rebuilt,\n"
        "lost, leaves): rebuilt and lost are ascending leaf indices; leaves holds len(rebuilt) slots of\n"
        "leaf_size bytes, slot j being leaf rebuilt[j] (the short last leaf zero-padded).");

    m.def(
        "rs_xor_encode",
        [=](const py::object& data, size_t leaf_size, size_t groups, int threads, const std::string& isa) {
          const gf::Kernels& kern = rs_kernels(isa);
          BufferView buf(data);
          rs_code(buf.size(), leaf_size, 255, 1, groups);
          py::bytes parity = new_bytes(groups * leaf_size);
          uint8_t* out = bytes_ptr(parity);
          py::gil_scoped_release release;
          gf::xor_encode(buf.data(), buf.size(), leaf_size, groups, out, threads, kern);
          return parity;
        },
        py::arg("data"), py::arg("leaf_size"), py::arg("groups"), py::arg("threads") = 0, py::arg("isa") = "",
        "Plain XOR parity with the same interleaving (groups leaves; leaf g = XOR of data leaves i % groups == g).\n"
        "A benchmark baseline: it repairs one leaf per group.");

    m.def(
        "gf256_mul",
        [=](const py::object& data, int coef, const std::string& isa) {
          if (coef < 0 || coef > 255) throw py::value_error("coef must be a byte (0..255)");
          const gf::Kernels& kern = rs_kernels(isa);
          BufferView buf(data);
          py::bytes out = new_bytes(buf.size());
          uint8_t* dst = bytes_ptr(out);
          std::memset(dst, 0, buf.size());
          const gf::CoefTable t = gf::make_coef_table(static_cast<uint8_t>(coef));
          const uint8_t* src = buf.data();
          kern.mul_acc(&src, 1, buf.size(), &dst, 1, &t);
          return out;
        },
        py::arg("data"), py::arg("coef"), py::arg("isa") = "",
        "coef * b in GF(2^8) (polynomial 0x11D) for every byte b, with the given kernel (for tests).");

    m.def(
        "gf256_cauchy",
        [](int k, int m_) {
          try {
            const auto c = gf::cauchy_matrix(k, m_);
            return py::bytes(reinterpret_cast<const char*>(c.data()), c.size());
          } catch (const std::invalid_argument& e) {
            throw py::value_error(e.what());
          }
        },
        py::arg("k"), py::arg("m"), "The m x k Cauchy parity matrix, row-major: 1 / ((k + r) ^ j).");

    m.def(
        "gf256_invert",
        [](const py::object& matrix, int n) -> py::object {
          BufferView buf(matrix);
          if (n < 1 || n > 256 || buf.size() != static_cast<size_t>(n) * static_cast<size_t>(n))
            throw py::value_error("matrix must hold n * n bytes with 1 <= n <= 256");
          std::vector<uint8_t> a(buf.data(), buf.data() + buf.size());
          if (!gf::invert(a, n)) return py::none();
          return py::bytes(reinterpret_cast<const char*>(a.data()), a.size());
        },
        py::arg("matrix"), py::arg("n"), "Inverse of an n x n row-major GF(2^8) matrix, or None if singular.");

    m.def("rs_available_isas", &gf::available_isas, "Parity kernels usable here, narrowest first.");
    m.def("rs_default_isa", &gf::default_isa, "The parity kernel used by default (the widest usable).");
  }

  // ---- CUDA entry points (GPU engine issue) ----
  // SAFETY: device addresses follow the contract in csrc/cuda/backend.hpp (the Python layer passes
  // data_ptr()s of CUDA tensors on `device`, keeps them referenced, and the current stream).
  m.def(
      "cuda_leaf_digests",
      [](const std::vector<std::pair<uintptr_t, uint64_t>>& tensors, size_t leaf_size, int device, uintptr_t stream) {
        check_leaf_size(leaf_size);
        std::vector<cuda::HashJob> jobs;
        jobs.reserve(tensors.size());
        for (const auto& t : tensors) jobs.push_back(cuda::HashJob{t.first, t.second});
        std::vector<uint64_t> leaves;
        {
          py::gil_scoped_release release;
          leaves = cuda::leaf_digests(jobs, leaf_size, device, stream);
        }
        py::list out;
        size_t at = 0;
        for (const auto& job : jobs) {
          const size_t n = (job.nbytes + leaf_size - 1) / leaf_size;
          out.append(py::bytes(reinterpret_cast<const char*>(leaves.data() + at), n * sizeof(uint64_t)));
          at += n;
        }
        return out;
      },
      py::arg("tensors"), py::arg("leaf_size"), py::arg("device"), py::arg("stream"),
      "Leaf digests of CUDA tensors given as (device address, nbytes), all hashed by one kernel launch "
      "on `stream` (an int cudaStream_t, e.g. torch.cuda.current_stream().cuda_stream) of `device`. "
      "Returns one bytes object of packed little-endian u64 per tensor.");

  m.def(
      "cuda_diff",
      [diff_stats, find_diff_dtype](const std::vector<std::tuple<uintptr_t, uintptr_t, uint64_t, std::string>>& pairs,
                                    int device, uintptr_t stream) {
        std::vector<cuda::DiffJob> jobs;
        jobs.reserve(pairs.size());
        for (const auto& [a, b, nbytes, dtype] : pairs) {
          const cpu::DiffDType& dt = find_diff_dtype(dtype);
          if (nbytes % dt.size != 0) {
            throw py::value_error("byte length " + std::to_string(nbytes) + " is not a multiple of the " +
                                  std::to_string(dt.size) + "-byte element size of " + dt.name);
          }
          jobs.push_back(cuda::DiffJob{a, b, nbytes, dt.kind, dt.size});
        }
        std::vector<diff::Partial> partials;
        {
          py::gil_scoped_release release;
          partials = cuda::diff(jobs, device, stream);
        }
        py::list out;
        for (size_t i = 0; i < jobs.size(); ++i)
          out.append(diff_stats(partials[i], jobs[i].nbytes / jobs[i].size, jobs[i].kind != diff::Kind::kBits));
        return out;
      },
      py::arg("pairs"), py::arg("device"), py::arg("stream"),
      "Bitwise diff of CUDA tensor pairs given as (address a, address b, nbytes, dtype name), in two "
      "kernel launches on `stream` of `device`; one stats dict per pair, as diff_buffers returns.");

  m.def(
      "emulate_cuda_leaf_digests",
      [](const py::object& data, size_t leaf_size) {
        check_leaf_size(leaf_size);
        BufferView buf(data);
        const size_t n = (buf.size() + leaf_size - 1) / leaf_size;
        std::string out(n * sizeof(uint64_t), '\0');
        {
          py::gil_scoped_release release;
          cpu::emulate_cuda_leaf_digests(buf.data(), buf.size(), leaf_size, reinterpret_cast<uint64_t*>(out.data()));
        }
        return py::bytes(out);
      },
      py::arg("data"), py::arg("leaf_size") = 65536,
      "Leaf digests computed on the CPU with the CUDA kernel's exact work partition (a test aid).");
}
