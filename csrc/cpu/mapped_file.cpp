#include "mapped_file.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace fastckpt::cpu {

MappedFile::MappedFile(const std::string& path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw std::system_error(errno, std::generic_category(), path);
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    const int err = errno;
    ::close(fd_);
    throw std::system_error(err, std::generic_category(), path);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd_);
    // Directories and devices have no fixed size to bound reads by.
    throw std::system_error(S_ISDIR(st.st_mode) ? EISDIR : EINVAL, std::generic_category(), path);
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ == 0) return;  // mmap of length 0 is an error; an empty file simply has no leaves
  void* p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd_, 0);
  if (p == MAP_FAILED) {
    const int err = errno;
    ::close(fd_);
    throw std::system_error(err, std::generic_category(), path);
  }
  // Hints only; failures are harmless. Huge pages cut TLB misses when the page cache offers them.
  ::madvise(p, size_, MADV_SEQUENTIAL);
#ifdef MADV_HUGEPAGE
  ::madvise(p, size_, MADV_HUGEPAGE);
#endif
  data_ = static_cast<const uint8_t*>(p);
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace fastckpt::cpu
