// One pass over a file for `fastckpt protect`: the file's leaf digests, its Reed-Solomon parity, the
// leaf digests of byte spans inside it (tensors: leaves counted from each span's own start, as the v1
// tensor digest needs) and the CRC-32 of other spans (zip records), each byte read from memory once
// while it is in cache. See parity_scan.cpp for how the work is cut.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "backend.hpp"
#include "crc32.hpp"
#include "gf256.hpp"

namespace fastckpt::parity {

struct Span {
  uint64_t offset;
  uint64_t nbytes;
};

struct ScanJob {
  size_t leaf_size;
  // Parity: null code means none (then `parity` and `parity_leaves` are unused). `parity` (m * G
  // leaves) may be null when out_fd >= 0: the parity is then only written out, never held whole.
  const gf::Code* code;
  uint8_t* parity;
  // When not null: the XXH3-64 of every parity leaf (m * G digests, leaf r * G + g), computed while
  // the leaf is in cache (what the sidecar records to check its parity).
  uint64_t* parity_leaves = nullptr;
  uint64_t* file_leaves;  // ceil(len / leaf_size) digests
  // Leaf digests of each span, concatenated in span order: span t's leaf j goes to
  // span_leaves[first_leaf(t) + j], first_leaf(t) = sum over u < t of ceil(nbytes_u / leaf_size).
  std::vector<Span> leaf_spans;
  uint64_t* span_leaves;
  std::vector<Span> crc_spans;  // crcs[i] = CRC-32 (zlib.crc32) of crc_spans[i]
  uint32_t* crcs;
  cpu::LongAccumulateFn hash_loop;
  cpu::Crc32Fn crc;
  int threads;
  bool populate;  // data is a file mapping: map each range before reading it
  // When out_fd >= 0, parity leaf j is also written to out_fd at out_offset + j * leaf_size as soon as
  // its group is final, and its write-back to disk is started (sync_file_range), so that a later
  // fsync of the file has little left to wait for. Write errors throw std::system_error.
  int out_fd = -1;
  uint64_t out_offset = 0;
};

// Leaves in span order: the size of span_leaves.
uint64_t total_span_leaves(const std::vector<Span>& spans, size_t leaf_size);

// Runs the job over data[0, len). Every span must lie inside [0, len) (std::invalid_argument
// otherwise, before anything is read); spans may overlap each other and come in any order.
void scan(const uint8_t* data, size_t len, const ScanJob& job, const gf::Kernels& kernels);

}  // namespace fastckpt::parity
