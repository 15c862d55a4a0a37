// Read-only memory map of a whole file, released on destruction. Reads never go past the size
// fstat reported when the map was made, so a corrupt length field elsewhere cannot make us read
// beyond the file. (A file truncated by another process *while* mapped raises SIGBUS; fastckpt
// documents that checkpoints must not be rewritten while being verified.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace fastckpt::cpu {

class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  int fd_ = -1;
};

}  // namespace fastckpt::cpu
