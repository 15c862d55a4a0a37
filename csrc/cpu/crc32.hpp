// CRC-32 as used by zip, gzip and zlib.crc32 (reflected polynomial 0xEDB88320, initial and final
// XOR 0xFFFFFFFF). The ISA files implement the bulk update with carry-less multiplication; crc32.cpp
// holds the portable slicing-by-8 loop, the combine math, run-time dispatch and the threaded entry
// points the binding calls.
//
// Included by ISA files compiled with different -m flags: declarations and plain constants only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace fastckpt::cpu {

constexpr uint32_t kCrc32Poly = 0xEDB88320u;  // x^32 + x^26 + ... + 1, bit-reflected

// All update functions take and return the *finalized* CRC (the zlib.crc32 convention): start with
// 0, feed the previous result to continue a stream.
using Crc32Fn = uint32_t (*)(uint32_t crc, const uint8_t* in, size_t len);

uint32_t crc32_slice8(uint32_t crc, const uint8_t* in, size_t len);
// Raw register update (no pre/post inversion), used by the ISA files to finish the last bytes.
uint32_t crc32_raw_table(uint32_t reg, const uint8_t* in, size_t len);
uint32_t crc32_pclmul(uint32_t crc, const uint8_t* in, size_t len);
uint32_t crc32_vpclmul(uint32_t crc, const uint8_t* in, size_t len);

// "slice8", "pclmul", "vpclmul": the ones compiled in and runnable here, narrowest first.
std::vector<std::string> crc32_isas();
const std::string& crc32_default_isa();
// Throws std::invalid_argument for an unknown or unusable name; "" means the default.
Crc32Fn crc32_for(const std::string& isa);

// CRC of A||B from crc(A), crc(B) and len(B), in O(log len(B)).
uint32_t crc32_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);

// CRC-32 of each range base[offsets[i], offsets[i] + lengths[i]) into out[i], each started from
// init[i] (or 0 when init is null). Ranges may overlap and come in any order. Large ranges are split
// into pieces hashed in parallel and joined with crc32_combine; `threads` 0 means all cores.
void crc32_ranges(const uint8_t* base, const uint64_t* offsets, const uint64_t* lengths, const uint32_t* init,
                  size_t count, uint32_t* out, int threads, Crc32Fn fn);

}  // namespace fastckpt::cpu
