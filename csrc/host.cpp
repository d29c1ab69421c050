// Host side: starts zygotes with posix_spawn (never a fork of the trainer), feeds each one from
// a shared queue on its own thread, enforces a backstop deadline, respawns dead zygotes, and
// reports their in-flight programs as infrastructure errors.
#include "host.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace rlkd {

struct Executor::Batch {
  std::mutex m;
  std::condition_variable cv;
  std::vector<std::string> sources;
  std::vector<Result> results;
  size_t left = 0;
};

struct Executor::Job {
  uint64_t id = 0;
  std::shared_ptr<Batch> batch;
  size_t index = 0;
  uint32_t timeout_ms = 0;
  uint8_t conventions = 0;
  Clock::time_point backstop;
};

struct Executor::Zyg {
  std::atomic<pid_t> pid{-1};
  int to = -1, from = -1, wake = -1;
  std::string base;
  std::string buf;
  std::unordered_map<uint64_t, Job> inflight;
  std::thread thread;
};

namespace {

int high_fd(int fd) {  // keep pipe ends above 9 so dup2 into 3/4 never aliases them
  int h = fcntl(fd, F_DUPFD_CLOEXEC, 10);
  close(fd);
  return h;
}

// Scratch directories are /tmp/rlkd-exec-<owner pid>-<owner start time>-XXXXXX: the name says
// whose they are, so one whose owner was killed (SIGKILL leaves no chance to clean up) can be
// told from one in use.
constexpr char kScratchDir[] = "/tmp";
constexpr char kScratchPrefix[] = "rlkd-exec-";

// When the process started (clock ticks after boot: /proc/<pid>/stat field 22), 0 if there is
// no such process. With the pid it names a process for good: a reused pid starts later.
unsigned long long process_start(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(f, stat)) return 0;
  size_t close = stat.rfind(')');  // the command name may hold spaces and parentheses
  if (close == std::string::npos) return 0;
  std::istringstream fields(stat.substr(close + 1));
  std::string field;
  for (int i = 3; i <= 22 && fields >> field; ++i)
    if (i == 22) return std::strtoull(field.c_str(), nullptr, 10);
  return 0;
}

// Removes the scratch directories of this user whose owner process is gone (a later start time
// under the same pid is another process). Others' directories and other names are left alone.
void remove_stale_scratch() {
  DIR* d = opendir(kScratchDir);
  if (!d) return;
  std::vector<std::string> stale;
  const size_t plen = sizeof kScratchPrefix - 1;
  while (dirent* e = readdir(d)) {
    if (strncmp(e->d_name, kScratchPrefix, plen) != 0) continue;
    unsigned long long pid = 0, start = 0;
    int used = 0;
    if (sscanf(e->d_name + plen, "%llu-%llu-%n", &pid, &start, &used) != 2 || used == 0) continue;
    std::string path = std::string(kScratchDir) + "/" + e->d_name;
    struct stat st;
    if (lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid()) continue;
    if (pid == 0 || pid > 0x7fffffffULL || process_start(static_cast<pid_t>(pid)) != start)
      stale.push_back(path);
  }
  closedir(d);
  for (auto& path : stale) remove_tree(path);
}

Result infra(const std::string& why) {
  Result r;
  r.status = kInfra;
  r.err = why;
  return r;
}

// Reads whatever is available into buf; false on EOF/error.
bool read_some(int fd, std::string& buf) {
  char tmp[1 << 14];
  for (;;) {
    ssize_t n = read(fd, tmp, sizeof tmp);
    if (n > 0) {
      buf.append(tmp, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return true;
    return false;
  }
}

// Write with a deadline to a non-blocking fd.
bool write_within(int fd, const char* p, size_t n, int timeout_ms) {
  auto until = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w > 0) {
      p += w;
      n -= static_cast<size_t>(w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno != EAGAIN) return false;
    pollfd pf{fd, POLLOUT, 0};
    int left = static_cast<int>(ms_until(until));
    if (left <= 0 || poll(&pf, 1, left) <= 0 || (pf.revents & (POLLERR | POLLHUP))) return false;
  }
  return true;
}

}  // namespace

Executor::Executor(HostOptions opts) : opts_(std::move(opts)), owner_(getpid()) {
  if (opts_.workers < 1 || opts_.slots < 1) throw std::invalid_argument("workers, slots >= 1");
  owner_start_ = process_start(owner_);
  remove_stale_scratch();
  for (int i = 0; i < opts_.workers; ++i) {
    zygs_.push_back(std::make_unique<Zyg>());
    zygs_.back()->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  }
  // Zygotes are started by their own threads: PR_SET_PDEATHSIG follows the spawning thread.
  for (auto& z : zygs_) z->thread = std::thread(&Executor::dispatch, this, z.get());
  std::unique_lock<std::mutex> lk(m_);
  started_cv_.wait(lk, [&] { return started_ == opts_.workers; });
  bool all = std::all_of(zygs_.begin(), zygs_.end(), [](auto& z) { return z->pid > 0; });
  if (!all) {
    std::string why = features_;
    lk.unlock();
    close();
    throw std::runtime_error("executor zygote failed to start: " + why);
  }
}

Executor::~Executor() { close(); }

void Executor::close() {
  if (getpid() != owner_) {
    // A fork of the trainer (a DataLoader worker, say) holds a copy of this object but none of
    // its threads or zygotes: touch nothing that belongs to the parent.
    for (auto& z : zygs_)
      if (z->thread.joinable()) z->thread.detach();
    return;
  }
  {
    std::lock_guard<std::mutex> lk(m_);
    if (stop_ && zygs_.empty()) return;
    stop_ = true;
  }
  wake_all();
  for (auto& z : zygs_)
    if (z->thread.joinable()) z->thread.join();
  std::lock_guard<std::mutex> lk(m_);
  for (auto& z : zygs_) ::close(z->wake);
  zygs_.clear();
  while (!queue_.empty()) {
    complete(queue_.front(), infra("executor closed"));
    queue_.pop_front();
  }
}

void Executor::wake_all() {
  uint64_t one = 1;
  for (auto& z : zygs_)
    if (z->wake >= 0 && write(z->wake, &one, sizeof one) < 0) {
    }
}

void Executor::complete(Job& job, const Result& r) {
  Batch& b = *job.batch;
  std::lock_guard<std::mutex> lk(b.m);
  b.results[job.index] = r;
  if (--b.left == 0) b.cv.notify_all();
}

std::vector<Result> Executor::run(std::vector<std::string> sources, uint32_t timeout_ms,
                                  uint8_t conventions) {
  if (getpid() != owner_) throw std::runtime_error("a PotExecutor cannot be used after fork()");
  auto batch = std::make_shared<Batch>();
  batch->sources = std::move(sources);
  const size_t n = batch->sources.size();
  batch->results.assign(n, Result{});
  batch->left = n;
  if (n == 0) return {};
  // A program may first wait in its zygote's queue behind others (each holds a full-priority
  // place for at most 30 ms), hence twice the deadline.
  const auto backstop = std::chrono::milliseconds(2 * static_cast<int64_t>(timeout_ms)) +
                        std::chrono::milliseconds(static_cast<int64_t>(opts_.grace_s * 1000));
  {
    std::lock_guard<std::mutex> lk(m_);
    if (stop_) throw std::runtime_error("executor is closed");
    for (size_t i = 0; i < n; ++i) {
      Job j;
      j.id = next_id_++;
      j.batch = batch;
      j.index = i;
      j.timeout_ms = timeout_ms;
      j.conventions = conventions;
      j.backstop = Clock::time_point(backstop);  // made absolute when sent
      if (batch->sources[i].size() > kMaxSource) {
        Result r;
        r.status = kError;
        r.err = "program too large";
        complete(j, r);
        continue;
      }
      queue_.push_back(std::move(j));
    }
  }
  wake_all();
  std::unique_lock<std::mutex> lk(batch->m);
  batch->cv.wait(lk, [&] { return batch->left == 0; });
  return std::move(batch->results);
}

bool Executor::spawn(Zyg* z, std::string* err) {
  std::string tmpl = std::string(kScratchDir) + "/" + kScratchPrefix + std::to_string(owner_) +
                     "-" + std::to_string(owner_start_) + "-XXXXXX";
  if (!mkdtemp(tmpl.data())) {
    *err = std::string("mkdtemp: ") + strerror(errno);
    return false;
  }
  z->base = tmpl;
  chmod(tmpl.c_str(), 0711);
  int to[2], from[2];
  if (pipe2(to, O_CLOEXEC) != 0) return *err = "pipe failed", false;
  if (pipe2(from, O_CLOEXEC) != 0) {
    ::close(to[0]);
    ::close(to[1]);
    return *err = "pipe failed", false;
  }
  to[0] = high_fd(to[0]);
  from[1] = high_fd(from[1]);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, to[0], 3);
  posix_spawn_file_actions_adddup2(&fa, from[1], 4);
#if defined(__GLIBC__) && __GLIBC_PREREQ(2, 34)
  posix_spawn_file_actions_addclosefrom_np(&fa, 5);  // the zygote closes them too (older glibc)
#endif
  posix_spawnattr_t at;
  posix_spawnattr_init(&at);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&at, &none);
  posix_spawnattr_setsigdefault(&at, &all);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK |
                                    POSIX_SPAWN_SETSIGDEF);
  std::vector<std::string> args = opts_.argv;
  args.push_back(z->base);
  args.push_back(std::to_string(getpid()));
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // A clean environment: nothing of the trainer's (tokens, keys) reaches a program.
  std::vector<std::string> env = opts_.env;
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, argv[0], &fa, &at, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  ::close(to[0]);
  ::close(from[1]);
  if (rc != 0) {
    ::close(to[1]);
    ::close(from[0]);
    remove_tree(z->base);
    *err = std::string("posix_spawn: ") + strerror(rc);
    return false;
  }
  z->pid = pid;
  z->to = to[1];
  z->from = from[0];
  z->buf.clear();
  // Wait for its hello record (it imports the preload modules first).
  ResultHeader h{};
  pollfd pf{z->from, POLLIN, 0};
  int wait_ms = static_cast<int>(opts_.start_timeout_s * 1000);
  bool got = poll(&pf, 1, wait_ms) > 0 && read_exact(z->from, &h, sizeof h) &&
             h.magic == kResMagic && (h.flags & kHello) && h.err_len <= kMaxErr;
  std::string text(got ? h.err_len : 0, '\0');
  got = got && read_exact(z->from, text.data(), text.size());
  if (!got || h.status != kOk) {
    *err = got ? text : "zygote exited or stalled during start-up (see its stderr)";
    reap(z, "");
    return false;
  }
  fcntl(z->to, F_SETFL, O_NONBLOCK);
  fcntl(z->from, F_SETFL, O_NONBLOCK);
  std::lock_guard<std::mutex> lk(m_);
  features_ = text;
  return true;
}

// Stop the zygote, fail what it had in flight. Gracefully (on close): closing its request pipe
// makes it kill and reap its children and exit. Otherwise, or if it lingers: SIGKILL (its
// children then die through PDEATHSIG).
void Executor::reap(Zyg* z, const std::string& why, bool graceful) {
  if (z->pid > 0) {
    bool gone = false;
    if (graceful && z->to >= 0) {
      ::close(z->to);
      z->to = -1;
      for (int i = 0; i < 1000 && !gone; ++i) {
        gone = waitpid(z->pid, nullptr, WNOHANG) == z->pid;
        if (!gone) usleep(2000);
      }
    }
    if (!gone) {
      kill(z->pid, SIGKILL);
      while (waitpid(z->pid, nullptr, 0) < 0 && errno == EINTR) {
      }
    }
  }
  for (int* fd : {&z->to, &z->from})
    if (*fd >= 0) {
      ::close(*fd);
      *fd = -1;
    }
  z->pid = -1;
  remove_tree(z->base);
  for (auto& [id, job] : z->inflight) complete(job, infra(why));
  z->inflight.clear();
}

void Executor::fail_queued(const std::string& why) {
  std::lock_guard<std::mutex> lk(m_);
  while (!queue_.empty()) {
    complete(queue_.front(), infra(why));
    queue_.pop_front();
  }
}

bool Executor::send_jobs(Zyg* z, std::vector<Job>& jobs) {
  std::string frames;
  auto now = Clock::now();
  for (auto& j : jobs) {
    const std::string& src = j.batch->sources[j.index];
    RequestHeader h{kReqMagic, static_cast<uint32_t>(src.size()), j.id, j.timeout_ms,
                    j.conventions, {0, 0, 0}};
    frames.append(reinterpret_cast<const char*>(&h), sizeof h);
    frames.append(src);
    j.backstop = now + (j.backstop - Clock::time_point());
  }
  int limit = static_cast<int>(opts_.grace_s * 1000) + 10000;
  bool ok = write_within(z->to, frames.data(), frames.size(), limit);
  for (auto& j : jobs) z->inflight.emplace(j.id, std::move(j));
  jobs.clear();
  return ok;
}

void Executor::read_results(Zyg* z, bool* eof) {
  *eof = !read_some(z->from, z->buf);
  size_t off = 0;
  while (z->buf.size() - off >= sizeof(ResultHeader)) {
    ResultHeader h;
    memcpy(&h, z->buf.data() + off, sizeof h);
    if (h.magic != kResMagic || h.err_len > kMaxErr) {
      *eof = true;  // a corrupt stream: treat the zygote as lost
      break;
    }
    if (z->buf.size() - off < sizeof h + h.err_len) break;
    auto it = z->inflight.find(h.job);
    if (it != z->inflight.end()) {
      Result r;
      r.status = h.status;
      r.flags = h.flags;
      r.value = h.value;
      r.reft = h.reft;
      r.elapsed = h.elapsed;
      r.err.assign(z->buf.data() + off + sizeof h, h.err_len);
      complete(it->second, r);
      z->inflight.erase(it);
    }
    off += sizeof h + h.err_len;
  }
  z->buf.erase(0, off);
}

void Executor::dispatch(Zyg* z) {
  std::string err;
  bool ok = spawn(z, &err);
  {
    std::lock_guard<std::mutex> lk(m_);
    if (!ok) features_ = err;
    started_++;
  }
  started_cv_.notify_all();
  int failures = 0;
  std::vector<Job> take;
  for (;;) {
    {
      std::lock_guard<std::mutex> lk(m_);
      if (stop_) break;
    }
    if (z->pid <= 0) {
      if (!ok) {  // the constructor is about to fail; wait to be stopped
        pollfd pf{z->wake, POLLIN, 0};
        poll(&pf, 1, 100);
        continue;
      }
      if (spawn(z, &err)) {
        failures = 0;
        std::lock_guard<std::mutex> lk(m_);
        respawns_++;
      } else if (++failures >= 3) {
        fail_queued("zygote could not be restarted: " + err);
        pollfd pf{z->wake, POLLIN, 0};
        poll(&pf, 1, 500);
      }
      continue;
    }
    {
      std::lock_guard<std::mutex> lk(m_);
      while (z->inflight.size() + take.size() < static_cast<size_t>(opts_.slots) &&
             !queue_.empty()) {
        take.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    if (!take.empty() && !send_jobs(z, take)) {
      reap(z, "zygote stopped accepting programs");
      continue;
    }
    int64_t wait_ms = -1;
    for (auto& [id, j] : z->inflight) {
      int64_t left = ms_until(j.backstop);
      wait_ms = wait_ms < 0 ? left : std::min(wait_ms, left);
    }
    pollfd fds[2] = {{z->from, POLLIN, 0}, {z->wake, POLLIN, 0}};
    int n = poll(fds, 2, static_cast<int>(wait_ms));
    if (n < 0 && errno != EINTR) break;
    if (fds[1].revents) {
      uint64_t v;
      if (read(z->wake, &v, sizeof v) < 0) {
      }
    }
    if (fds[0].revents) {
      bool eof = false;
      read_results(z, &eof);
      if (eof) {
        reap(z, "zygote died while running this program");
        continue;
      }
    }
    auto now = Clock::now();
    for (auto& [id, j] : z->inflight)
      if (now >= j.backstop) {
        reap(z, "zygote unresponsive past the deadline");
        break;
      }
  }
  reap(z, "executor closed", true);
}

std::vector<int> Executor::zygote_pids() {
  std::lock_guard<std::mutex> lk(m_);
  std::vector<int> out;
  for (auto& z : zygs_) out.push_back(z->pid);
  return out;
}

int Executor::respawns() {
  std::lock_guard<std::mutex> lk(m_);
  return respawns_;
}

std::string Executor::features() {
  std::lock_guard<std::mutex> lk(m_);
  return features_;
}

}  // namespace rlkd
