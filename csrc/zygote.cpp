// The zygote's event loop (runs inside the lean `python -I -S` zygote process, GIL held).
//
// It reads requests from the host, forks one confined child per program (isolation "fork") or
// hands programs to confined long-lived workers (isolation "worker"), enforces each program's
// wall-clock deadline from outside with SIGKILL of its process group, reaps every child, and
// sends one fixed-size binary result per request back to the host.
#include <dirent.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <pybind11/pybind11.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <string>
#include <vector>

#include "common.h"
#include "zygote.h"

namespace py = pybind11;

namespace rlkd {
namespace {

int pidfd_open(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }

// Lay out the child's descriptors: 0-2 /dev/null, 3 result pipe, 4 request pipe (workers),
// nothing else (the zygote's pipes to the host and to other children are closed).
void setup_fds(int res, int req) {
  int null = open("/dev/null", O_RDWR);
  int r = fcntl(res, F_DUPFD, 10);
  int q = req >= 0 ? fcntl(req, F_DUPFD, 10) : -1;
  if (null < 0 || r < 0 || (req >= 0 && q < 0)) _exit(121);
  dup2(null, 0);
  dup2(null, 1);
  dup2(null, 2);
  dup2(r, 3);
  if (q >= 0) dup2(q, 4);
  syscall(SYS_close_range, q >= 0 ? 5u : 4u, ~0u, 0u);
}

Result call_program(const py::object& run, const std::string& src, uint8_t conventions) {
  Result r;
  r.status = kError;
  try {
    py::tuple t = run(py::bytes(src), conventions);
    r.status = static_cast<uint8_t>(t[0].cast<int>());
    if (!t[1].is_none()) {
      r.value = t[1].cast<double>();
      r.flags |= kHasValue;
    }
    if (!t[2].is_none()) {
      r.reft = t[2].cast<double>();
      r.flags |= kHasReft;
    }
    r.err = t[3].cast<std::string>();
  } catch (const std::exception& e) {
    r.err = std::string("executor: ") + e.what();
  }
  return r;
}

std::string signal_name(int sig) {
#if defined(__GLIBC__) && __GLIBC_PREREQ(2, 32)
  if (const char* s = sigabbrev_np(sig)) return std::string("SIG") + s;
#endif
  return "signal " + std::to_string(sig);
}

}  // namespace

struct Zygote::Kid {
  pid_t pid = -1;
  int pidfd = -1;
  int res = -1;  // child -> zygote result pipe
  int req = -1;  // zygote -> worker request pipe
  std::string dir;
  std::string buf;
  bool busy = false;
  bool killed = false;
  bool retiring = false;
  bool demoted = false;
  bool paused = false;    // stopped by pace_demoted()
  uint64_t job = 0;
  uint32_t timeout_ms = 0;
  Clock::time_point deadline, started, demote_at;
  clockid_t cpu_clock = 0;
  uint32_t demote_cpu_ms = 0;
  double cpu0_ms = 0;  // its CPU time when this program started (workers run many)
  int served = 0;
};

Zygote::Zygote(int in_fd, int out_fd, ZygoteConfig cfg, py::object run, py::object clean)
    : in_(in_fd), out_(out_fd), cfg_(std::move(cfg)), run_(std::move(run)),
      clean_(std::move(clean)) {}

Zygote::~Zygote() = default;

void Zygote::send(uint64_t job, const Result& r) {
  std::string rec = encode_result(job, r);
  if (!write_all(out_, rec.data(), rec.size())) shutdown(3);
}

std::string Zygote::new_dir() {
  std::string dir = cfg_.base_dir + "/p" + std::to_string(++seq_);
  if (mkdir(dir.c_str(), 0700) != 0) return "";
  if (feat_.uid_dropped && chown(dir.c_str(), 65534, 65534) != 0) {
    rmdir(dir.c_str());
    return "";
  }
  return dir;
}

// Forks a confined child. Fork mode: it runs `src` and exits. Worker mode: it serves requests.
Zygote::Kid* Zygote::spawn(const std::string* src, uint8_t conventions, uint32_t timeout_ms) {
  auto kid = std::make_unique<Kid>();
  kid->dir = new_dir();
  int res[2] = {-1, -1}, req[2] = {-1, -1};
  if (kid->dir.empty() || pipe2(res, O_CLOEXEC) != 0 || (!src && pipe2(req, O_CLOEXEC) != 0)) {
    for (int fd : {res[0], res[1], req[0], req[1]})
      if (fd >= 0) close(fd);
    remove_tree(kid->dir);
    return nullptr;
  }
  const pid_t me = getpid();
  // Fork mode: RLIMIT_CPU backs up the wall deadline. Workers serve many programs: none.
  uint64_t cpu_s = src ? static_cast<uint64_t>(std::ceil(timeout_ms / 1000.0)) + 1 : 0;
  // A bare fork: the zygote is single-threaded and holds the GIL, so the child's interpreter is
  // consistent without PyOS_AfterFork_Child, whose Python at-fork hooks (threading, random
  // reseeding) would dirty ~150 pages per child. Children therefore share the zygote's random
  // state: a program's `random` draws are reproducible.
  pid_t pid = fork();
  if (pid == 0) {
    setup_fds(res[1], src ? -1 : req[0]);
    enter_sandbox(cfg_.sandbox, feat_, kid->dir, cpu_s, me);
    if (src) {
      std::string rec = encode_result(0, call_program(run_, *src, conventions));
      write_all(3, rec.data(), rec.size());
      _exit(0);
    }
    worker_loop();
  }
  close(res[1]);
  if (req[0] >= 0) close(req[0]);
  kid->res = res[0];
  kid->req = req[1];
  if (pid < 0) {
    close(kid->res);
    if (kid->req >= 0) close(kid->req);
    remove_tree(kid->dir);
    return nullptr;
  }
  setpgid(pid, pid);  // also done by the child; whichever runs first wins the race
  kid->pid = pid;
  kid->pidfd = pidfd_open(pid);
  fcntl(kid->res, F_SETFL, O_NONBLOCK);
  kids_.push_back(std::move(kid));
  return kids_.back().get();
}

[[noreturn]] void Zygote::worker_loop() {
  bool ok = true;
  try {
    ok = clean_(true).cast<bool>();  // snapshot the interpreter state
  } catch (const std::exception&) {
    ok = false;
  }
  if (!ok) _exit(127);
  for (;;) {
    RequestHeader h;
    if (!read_exact(4, &h, sizeof h) || h.magic != kReqMagic || h.src_len > kMaxSource) _exit(0);
    std::string src(h.src_len, '\0');
    if (!read_exact(4, src.data(), src.size())) _exit(0);
    Result r = call_program(run_, src, h.conventions);
    bool clean = false;
    try {
      clean = clean_(false).cast<bool>();
    } catch (const std::exception&) {
    }
    if (!clean) r.flags |= kDirty;
    std::string rec = encode_result(0, r);
    if (!write_all(3, rec.data(), rec.size()) || !clean) _exit(0);
  }
}

void Zygote::start_job(uint64_t job, uint32_t timeout_ms, uint8_t conventions,
                       const std::string& src) {
  Kid* kid = nullptr;
  if (!cfg_.worker) {
    kid = spawn(&src, conventions, timeout_ms);
  } else {
    for (int attempt = 0; attempt < 2 && !kid; ++attempt) {
      for (auto& k : kids_)
        if (!k->busy && !k->retiring && !k->killed) {
          kid = k.get();
          break;
        }
      if (!kid) kid = spawn(nullptr, 0, timeout_ms);
      if (!kid) break;
      RequestHeader h{kReqMagic, static_cast<uint32_t>(src.size()), job, timeout_ms,
                      conventions, {0, 0, 0}};
      if (!write_all(kid->req, &h, sizeof h) || !write_all(kid->req, src.data(), src.size())) {
        retire(kid);  // it died while idle; try a fresh one
        kid = nullptr;
      }
    }
  }
  if (!kid) {
    Result r;
    r.status = kInfra;
    r.err = std::string("could not start a program process: ") + strerror(errno);
    send(job, r);
    return;
  }
  kid->busy = true;
  kid->job = job;
  kid->timeout_ms = timeout_ms;
  kid->started = Clock::now();
  kid->deadline = kid->started + std::chrono::milliseconds(timeout_ms);
  kid->demote_cpu_ms = std::max<uint32_t>(50, timeout_ms / 20);
  kid->demote_at = kid->started + std::chrono::milliseconds(kid->demote_cpu_ms);
  if (!kid->cpu_clock && clock_getcpuclockid(kid->pid, &kid->cpu_clock) != 0) kid->cpu_clock = 0;
  kid->cpu0_ms = cpu_ms(*kid);
}

// CPU time of a program process in ms; -1 when its CPU clock cannot be read.
double Zygote::cpu_ms(const Kid& kid) {
  timespec ts{};
  if (!kid.cpu_clock || clock_gettime(kid.cpu_clock, &ts) != 0) return -1;
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// A program that has used a twentieth of its deadline (at least 50 ms) in CPU time is most
// likely a runaway loop (PoT programs take a few ms, a sympy.solve a few tens): demote it.
// pace_demoted() then runs it only while this zygote has nothing else to run, at SCHED_IDLE.
// Its wall-clock deadline is unchanged; programs that finish quickly get the cores meanwhile.
// CPU time, not wall time: a program that merely waits for a core on a busy machine is no
// runaway. Below the threshold, look again when it could first have reached it.
void Zygote::maybe_demote(Kid* kid, Clock::time_point now) {
  double now_ms = cpu_ms(*kid);
  double used_ms = now_ms >= 0 && kid->cpu0_ms >= 0
                       ? now_ms - kid->cpu0_ms  // without a CPU clock: wall time
                       : std::chrono::duration<double, std::milli>(now - kid->started).count();
  if (used_ms < kid->demote_cpu_ms) {
    auto wait = std::chrono::microseconds(
        std::max<int64_t>(5000, static_cast<int64_t>((kid->demote_cpu_ms - used_ms) * 1000)));
    kid->demote_at = now + wait;
    return;
  }
  kid->demoted = true;
  set_policy(kid, SCHED_IDLE);
}

// Policy for every thread of a program; SCHED_OTHER also restores nice 0 where we may.
void Zygote::set_policy(Kid* kid, int policy) {
  sched_param prm{};
  auto apply = [&](pid_t tid) {
    sched_setscheduler(tid, policy, &prm);
    if (policy == SCHED_OTHER) setpriority(PRIO_PROCESS, static_cast<id_t>(tid), 0);
  };
  std::string dir = "/proc/" + std::to_string(kid->pid) + "/task";
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') apply(atoi(e->d_name));
    closedir(d);
  } else {
    apply(kid->pid);
  }
}

// Demoted programs are stopped (SIGSTOP of the group) while this zygote is `busy` (programs
// queued or just started, i.e. young), and continued when it is not: a program that sleeps or
// waits does not hold them up. SCHED_IDLE alone is not enough: measured here, 40 spinning
// runaways at SCHED_IDLE among 4,000 programs still cut throughput by a quarter, stopped ones
// by nothing beyond their wall time. SIGKILL ends a stopped process too.
void Zygote::pace_demoted(bool busy) {
  for (auto& k : kids_) {
    bool pause = busy && k->busy;  // a program that has reported is left to exit
    if (k->pid > 0 && k->demoted && !k->killed && !k->retiring && k->paused != pause) {
      kill(-k->pid, pause ? SIGSTOP : SIGCONT);
      k->paused = pause;
    }
  }
}

// Kids whose deadline is armed: running a program, or (fork mode) reported but not yet gone.
bool Zygote::watched(const Kid& k) const {
  return k.pid > 0 && !k.killed && (k.busy || !cfg_.worker);
}

void Zygote::retire(Kid* kid) {
  kid->retiring = true;
  kill(kid->pid, SIGKILL);
  if (kid->demoted) set_policy(kid, SCHED_OTHER);  // a SCHED_IDLE process dies slowly
}

void Zygote::drain(Kid* kid) {
  char tmp[4096];
  while (kid->buf.size() < (1u << 16)) {
    ssize_t n = read(kid->res, tmp, sizeof tmp);
    if (n <= 0) break;
    kid->buf.append(tmp, static_cast<size_t>(n));
  }
}

// A program process wrote (part of) its result. Fork mode reports it at once, while the child
// is still exiting (its deadline stays armed in case it does not).
void Zygote::on_data(Kid* kid) {
  drain(kid);
  if (!kid->busy || kid->buf.size() < sizeof(ResultHeader)) return;
  ResultHeader h;
  memcpy(&h, kid->buf.data(), sizeof h);
  size_t need = sizeof h + h.err_len;
  if (h.magic != kResMagic || h.err_len > kMaxErr) {
    finish(kid, crash("malformed result record"));
    retire(kid);
    return;
  }
  if (kid->buf.size() < need) return;
  Result r = parse(h, kid->buf.substr(sizeof h, h.err_len));
  bool extra = kid->buf.size() > need;
  kid->buf.clear();
  finish(kid, r);
  kid->served++;
  if (extra || (cfg_.worker && ((h.flags & kDirty) || kid->demoted ||
                                kid->served >= cfg_.max_programs)))
    retire(kid);
}

Result Zygote::timeout_result(uint32_t timeout_ms) {
  Result r;
  r.status = kTimeout;
  r.err = "wall-clock deadline of " + std::to_string(timeout_ms) + " ms exceeded";
  return r;
}

Result Zygote::crash(const std::string& why) {
  Result r;
  r.status = kCrash;
  r.err = why;
  return r;
}

// A record from a program process: trust only the statuses a program can legitimately reach.
Result Zygote::parse(const ResultHeader& h, const std::string& err) {
  if (h.status != kOk && h.status != kError && h.status != kNonNumeric)
    return crash("malformed result record");
  Result r;
  r.status = h.status;
  r.flags = h.flags & (kHasValue | kHasReft);
  r.value = h.value;
  r.reft = h.reft;
  r.err = err;
  if (r.status == kOk && !(r.flags & kHasValue)) return crash("malformed result record");
  return r;
}

void Zygote::finish(Kid* kid, Result r) {
  if (!kid->busy) return;
  kid->busy = false;
  r.elapsed = std::chrono::duration<double>(Clock::now() - kid->started).count();
  send(kid->job, r);
}

// The child exited: collect its record (fork mode), reap it, report, clean its directory.
void Zygote::on_exit(Kid* kid) {
  on_data(kid);
  int st = 0;
  while (waitpid(kid->pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (kid->busy) {
    Result r;
    if (kid->killed) {
      r = timeout_result(kid->timeout_ms);
    } else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGXCPU) {
      r.status = kTimeout;
      r.err = "CPU time limit exceeded";
    } else if (WIFSIGNALED(st)) {
      r = crash("killed by " + signal_name(WTERMSIG(st)));
    } else if (WIFEXITED(st) && WEXITSTATUS(st) >= 121 && WEXITSTATUS(st) <= 127) {
      r.status = kInfra;
      r.err = "sandbox setup failed (code " + std::to_string(WEXITSTATUS(st)) + ")";
    } else if (!cfg_.worker && WIFEXITED(st) && WEXITSTATUS(st) == 0 &&
               kid->buf.size() >= sizeof(ResultHeader)) {
      ResultHeader h;
      memcpy(&h, kid->buf.data(), sizeof h);
      bool exact = h.magic == kResMagic && h.err_len <= kMaxErr &&
                   kid->buf.size() == sizeof h + h.err_len;
      r = exact ? parse(h, kid->buf.substr(sizeof h)) : crash("malformed result record");
    } else {
      r = crash("exited with code " + std::to_string(WIFEXITED(st) ? WEXITSTATUS(st) : -1) +
                " without a result");
    }
    finish(kid, r);
  }
  close(kid->pidfd);
  close(kid->res);
  if (kid->req >= 0) close(kid->req);
  remove_tree(kid->dir);
  kid->pid = -1;
}

void Zygote::shutdown(int code) {
  for (auto& k : kids_)
    if (k->pid > 0) {
      kill(k->pid, SIGKILL);
      if (k->demoted) set_policy(k.get(), SCHED_OTHER);
    }
  for (auto& k : kids_)
    if (k->pid > 0) {
      waitpid(k->pid, nullptr, 0);
      remove_tree(k->dir);
    }
  _exit(code);
}

bool Zygote::read_request() {
  RequestHeader h;
  if (!read_exact(in_, &h, sizeof h) || h.magic != kReqMagic || h.src_len > kMaxSource)
    return false;
  std::string src(h.src_len, '\0');
  if (!read_exact(in_, src.data(), src.size())) return false;
  pending_.push_back(Pending{h.job, h.timeout_ms, h.conventions, std::move(src)});
  return true;
}

// Start queued programs while fewer than `active` young ones run: enough to keep the cores
// busy, few enough not to thrash them. A program older than kYoung (most take a few ms) no
// longer holds a place, so a slow one or a runaway awaiting demotion does not stall the rest.
constexpr auto kYoung = std::chrono::milliseconds(30);

bool Zygote::young(const Kid& k, Clock::time_point now) const {
  return k.pid > 0 && k.busy && !k.demoted && !k.killed && now - k.started < kYoung;
}

// Returns how many young programs run afterwards.
int Zygote::start_pending() {
  int running = 0;
  const auto now = Clock::now();
  for (auto& k : kids_)
    if (young(*k, now)) running++;
  while (!pending_.empty() && running < cfg_.active) {
    Pending p = std::move(pending_.front());
    pending_.pop_front();
    start_job(p.job, p.timeout_ms, p.conventions, p.src);
    running++;
  }
  return running;
}

void Zygote::serve() {
  // Nothing inherited beyond the two pipes, and no hold on the trainer's working directory.
  syscall(SYS_close_range, 5u, ~0u, 0u);
  if (chdir("/") != 0) _exit(1);
  feat_ = prepare_zygote(cfg_.sandbox, cfg_.base_dir);
  if (!feat_.seccomp) {  // never run programs without it
    Result r;
    r.status = kInfra;
    r.flags = kHello;
    r.err = "the kernel refused the zygote's seccomp filter";
    send(0, r);
    _exit(1);
  }
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != cfg_.host_pid) _exit(0);
  Result hello;
  hello.status = kOk;
  hello.flags = kHello;
  hello.err = "landlock=" + std::to_string(feat_.landlock_abi) +
              " netns=" + std::to_string(feat_.netns) +
              " uid=" + std::to_string(feat_.uid_dropped ? 65534 : geteuid()) +
              " seccomp=" + std::to_string(feat_.seccomp);
  send(0, hello);
  std::vector<pollfd> fds;
  std::vector<std::pair<Kid*, bool>> who;  // (kid, is_pidfd) for fds[1..]
  for (;;) {
    fds.assign(1, pollfd{in_, POLLIN, 0});
    who.clear();
    int64_t wait_ms = -1;
    const auto before = Clock::now();
    for (auto& k : kids_) {
      fds.push_back(pollfd{k->pidfd, POLLIN, 0});
      who.emplace_back(k.get(), true);
      if (k->busy) {
        fds.push_back(pollfd{k->res, POLLIN, 0});
        who.emplace_back(k.get(), false);
      }
      if (watched(*k)) {
        bool early = k->busy && cfg_.demote && !k->demoted;
        auto next = early ? std::min(k->demote_at, k->deadline) : k->deadline;
        if (young(*k, before))  // its place frees up then; paused ones may resume
          next = std::min(next, k->started + kYoung);
        int64_t left = ms_until(next);
        wait_ms = wait_ms < 0 ? left : std::min(wait_ms, left);
      }
    }
    int n = poll(fds.data(), fds.size(), static_cast<int>(wait_ms));
    if (n < 0 && errno != EINTR) shutdown(4);
    if (n > 0) {
      for (size_t i = 1; i < fds.size(); ++i) {
        if (!fds[i].revents) continue;
        auto [kid, is_pidfd] = who[i - 1];
        if (kid->pid <= 0) continue;
        if (is_pidfd)
          on_exit(kid);
        else
          on_data(kid);
      }
      if (fds[0].revents && !read_request()) shutdown(0);
    }
    auto now = Clock::now();
    for (auto& k : kids_) {
      if (!watched(*k)) continue;
      if (now >= k->deadline) {
        k->killed = true;
        kill(-k->pid, SIGKILL);
        kill(k->pid, SIGKILL);
        set_policy(k.get(), SCHED_OTHER);  // so it gets the CPU to die now
        // SIGKILL is final: report now rather than after the kernel has torn the process down
        // (tens of ms under load); it is reaped and its directory removed when it is gone.
        finish(k.get(), timeout_result(k->timeout_ms));
      } else if (k->busy && cfg_.demote && !k->demoted && now >= k->demote_at) {
        maybe_demote(k.get(), now);
      }
    }
    kids_.erase(std::remove_if(kids_.begin(), kids_.end(), [](auto& k) { return k->pid <= 0; }),
                kids_.end());
    int running = start_pending();
    pace_demoted(running > 0 || !pending_.empty());
  }
}

}  // namespace rlkd
