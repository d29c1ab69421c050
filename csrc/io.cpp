// Small io helpers shared by the host and the zygote.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common.h"

namespace rlkd {

bool write_all(int fd, const void* buf, size_t n) {
  const char* p = static_cast<const char*>(buf);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool read_exact(int fd, void* buf, size_t n) {
  char* p = static_cast<char*>(buf);
  while (n > 0) {
    ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

// rm -rf of a program's scratch directory, without following symlinks. A program may have made
// a directory unreadable for us (mode 000 when we are not root): chmod it back and retry.
static void remove_entries(int dirfd, int depth) {
  DIR* d = fdopendir(dirfd);
  if (!d) {
    ::close(dirfd);
    return;
  }
  while (dirent* e = readdir(d)) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    if (unlinkat(dirfd, e->d_name, 0) == 0) continue;
    if (depth > 64) continue;
    int sub = openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sub < 0 && errno == EACCES) {
      fchmodat(dirfd, e->d_name, 0700, 0);
      sub = openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    }
    if (sub >= 0) {
      fchmod(sub, 0700);
      remove_entries(sub, depth + 1);
    }
    unlinkat(dirfd, e->d_name, AT_REMOVEDIR);
  }
  closedir(d);
}

void remove_tree(const std::string& path) {
  if (path.empty()) return;
  if (rmdir(path.c_str()) == 0 || errno == ENOENT) return;
  int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd >= 0) remove_entries(fd, 0);
  rmdir(path.c_str());
}

std::string encode_result(uint64_t job, const Result& r) {
  ResultHeader h{};
  h.magic = kResMagic;
  h.job = job;
  h.status = r.status;
  h.flags = r.flags;
  size_t n = r.err.size() < kMaxErr ? r.err.size() : kMaxErr;
  h.err_len = static_cast<uint16_t>(n);
  h.value = r.value;
  h.reft = r.reft;
  h.elapsed = r.elapsed;
  std::string out(reinterpret_cast<const char*>(&h), sizeof h);
  out.append(r.err.data(), n);
  return out;
}

int64_t ms_until(Clock::time_point t) {
  auto d = std::chrono::duration_cast<std::chrono::microseconds>(t - Clock::now()).count();
  return d <= 0 ? 0 : (d + 999) / 1000;
}

}  // namespace rlkd
