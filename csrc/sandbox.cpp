// Confinement of one program process: process group, rlimits, privileges, Landlock, seccomp.
//
// The seccomp filter is written by hand (no libseccomp): an allowlist of the system calls a
// computing CPython needs. Everything else fails with EPERM, so a program sees a Python
// exception (PermissionError) rather than dying. Notably denied: fork/vfork and clone without
// CLONE_THREAD (threads stay possible; processes do not, which also stops fork bombs when we run
// as root and RLIMIT_NPROC is ignored), exec, sockets, ptrace, mount, setrlimit/prlimit with a
// new limit, chmod/chown/utime, and signals to any process but itself.
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <grp.h>
#include <malloc.h>
#include <string>
#include <vector>

#include "common.h"

namespace rlkd {
namespace {

// ---------------------------------------------------------------------------------------------
// Landlock (own definitions so older kernel headers still build; the kernel checks the sizes).
struct LlRulesetAttr {
  uint64_t handled_access_fs;
  uint64_t handled_access_net;
  uint64_t scoped;
};
struct __attribute__((packed)) LlPathBeneath {
  uint64_t allowed_access;
  int32_t parent_fd;
};
constexpr uint64_t kFsExecute = 1ull << 0, kFsWriteFile = 1ull << 1, kFsReadFile = 1ull << 2,
                   kFsReadDir = 1ull << 3, kFsTruncate = 1ull << 14, kFsIoctlDev = 1ull << 15;
constexpr uint64_t kNetBindTcp = 1, kNetConnectTcp = 2;
constexpr uint64_t kScopeAbstractUnix = 1, kScopeSignal = 2;
constexpr int kRulePathBeneath = 1;

#ifndef SYS_landlock_create_ruleset
#define SYS_landlock_create_ruleset 444
#define SYS_landlock_add_rule 445
#define SYS_landlock_restrict_self 446
#endif

uint64_t fs_access_for_abi(int abi) {
  uint64_t all = (1ull << 13) - 1;  // ABI 1: execute .. make_sym
  if (abi >= 2) all |= 1ull << 13;  // refer
  if (abi >= 3) all |= kFsTruncate;
  if (abi >= 5) all |= kFsIoctlDev;
  return all;
}

void add_path_rule(int ruleset, const std::string& path, uint64_t access) {
  int fd = open(path.c_str(), O_PATH | O_CLOEXEC);
  if (fd < 0) return;
  struct stat st;
  if (fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode))
    access &= kFsExecute | kFsWriteFile | kFsReadFile | kFsTruncate | kFsIoctlDev;
  LlPathBeneath rule{access, fd};
  syscall(SYS_landlock_add_rule, ruleset, kRulePathBeneath, &rule, 0);
  close(fd);
}

constexpr uint64_t kFsRead = kFsExecute | kFsReadFile | kFsReadDir;

int create_ruleset(int abi, uint64_t fs, bool net) {
  LlRulesetAttr attr{fs, 0, 0};
  size_t size = offsetof(LlRulesetAttr, handled_access_net);
  if (abi >= 4) {
    attr.handled_access_net = net ? kNetBindTcp | kNetConnectTcp : 0;
    size = offsetof(LlRulesetAttr, scoped);
  }
  if (abi >= 6) {
    attr.scoped = kScopeAbstractUnix | kScopeSignal;
    size = sizeof attr;
  }
  return static_cast<int>(syscall(SYS_landlock_create_ruleset, &attr, size, 0));
}

bool restrict_self(int rs) {
  bool ok = syscall(SYS_landlock_restrict_self, rs, 0) == 0;
  close(rs);
  return ok;
}

// Layer 1, once in the zygote (inherited by every child): read only `read_roots`, write only
// below `base`, no TCP, signals only into nested domains.
bool landlock_zygote(int abi, const SandboxConfig& cfg, const std::string& base) {
  const uint64_t fs = fs_access_for_abi(abi);
  int rs = create_ruleset(abi, fs, true);
  if (rs < 0) return false;
  for (const auto& root : cfg.read_roots) add_path_rule(rs, root, kFsRead);
  add_path_rule(rs, "/dev/null", kFsReadFile | kFsWriteFile | kFsTruncate);
  add_path_rule(rs, "/dev/urandom", kFsReadFile);
  add_path_rule(rs, base, fs);
  return restrict_self(rs);
}

// Layer 2, per child: writes only below its own directory (reads stay as layer 1 allows).
bool landlock_child(int abi, const std::string& dir) {
  const uint64_t writes = fs_access_for_abi(abi) & ~kFsRead;
  int rs = create_ruleset(abi, writes, false);
  if (rs < 0) return false;
  add_path_rule(rs, "/dev/null", kFsWriteFile | kFsTruncate);
  add_path_rule(rs, dir, writes);
  return restrict_self(rs);
}

// ---------------------------------------------------------------------------------------------
// seccomp-bpf
#if defined(__x86_64__)
constexpr uint32_t kArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
constexpr uint32_t kArch = AUDIT_ARCH_AARCH64;
#else
#error "the executor's seccomp filter supports x86_64 and aarch64"
#endif

constexpr uint32_t kAllow = SECCOMP_RET_ALLOW;
constexpr uint32_t deny(int err) { return SECCOMP_RET_ERRNO | (static_cast<uint32_t>(err) & 0xffff); }
constexpr uint32_t kArg0 = offsetof(seccomp_data, args);
constexpr uint32_t arg_lo(int i) { return kArg0 + 8 * i; }
constexpr uint32_t arg_hi(int i) { return kArg0 + 8 * i + 4; }

class Filter {
 public:
  void stmt(uint16_t code, uint32_t k) { prog_.push_back(BPF_STMT(code, k)); }
  void jump(uint16_t code, uint32_t k, uint8_t jt, uint8_t jf) {
    prog_.push_back(BPF_JUMP(code, k, jt, jf));
  }
  void load_nr() { stmt(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)); }
  // if nr == n: return action
  void simple(long nr, uint32_t action) {
    jump(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(nr), 0, 1);
    stmt(BPF_RET | BPF_K, action);
  }
  // if nr == n: run `block` (which must end in a return); the block is emitted inline.
  void guarded(long nr, const std::vector<sock_filter>& block) {
    jump(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(nr), 0,
         static_cast<uint8_t>(block.size()));
    prog_.insert(prog_.end(), block.begin(), block.end());
  }
  std::vector<sock_filter>& prog() { return prog_; }

 private:
  std::vector<sock_filter> prog_;
};

sock_filter ld(uint32_t off) { return BPF_STMT(BPF_LD | BPF_W | BPF_ABS, off); }
sock_filter ret(uint32_t action) { return BPF_STMT(BPF_RET | BPF_K, action); }
sock_filter jeq(uint32_t k, uint8_t jt, uint8_t jf) {
  return BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, k, jt, jf);
}
sock_filter jset(uint32_t k, uint8_t jt, uint8_t jf) {
  return BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, k, jt, jf);
}

// Allow when args[i] (as a 32-bit pid) is one of `ok` values; EPERM otherwise.
std::vector<sock_filter> arg_in(int i, std::vector<uint32_t> ok) {
  std::vector<sock_filter> b{ld(arg_lo(i))};
  for (size_t j = 0; j < ok.size(); ++j) {
    b.push_back(jeq(ok[j], 0, 1));
    b.push_back(ret(kAllow));
  }
  b.push_back(ret(deny(EPERM)));
  return b;
}

const long kAllowed[] = {
    SYS_read, SYS_write, SYS_readv, SYS_writev, SYS_pread64, SYS_pwrite64, SYS_lseek, SYS_close,
    SYS_fstat, SYS_newfstatat, SYS_statx, SYS_statfs, SYS_fstatfs, SYS_openat, SYS_faccessat,
#ifdef SYS_faccessat2
    SYS_faccessat2,
#endif
    SYS_getdents64, SYS_getcwd, SYS_chdir, SYS_fchdir, SYS_readlinkat, SYS_fcntl, SYS_dup,
    SYS_dup3, SYS_pipe2, SYS_mkdirat, SYS_unlinkat, SYS_renameat, SYS_renameat2, SYS_ftruncate,
    SYS_truncate, SYS_fsync, SYS_fdatasync, SYS_umask, SYS_flock, SYS_close_range,
    SYS_mmap, SYS_munmap, SYS_mprotect, SYS_mremap, SYS_madvise, SYS_brk, SYS_msync,
    SYS_mincore, SYS_membarrier,
    SYS_rt_sigaction, SYS_rt_sigprocmask, SYS_rt_sigreturn, SYS_rt_sigpending,
    SYS_rt_sigtimedwait, SYS_rt_sigsuspend, SYS_sigaltstack, SYS_setitimer, SYS_getitimer,
    SYS_futex, SYS_set_robust_list, SYS_get_robust_list, SYS_set_tid_address, SYS_rseq,
    SYS_restart_syscall,  // the kernel resumes interrupted sleeps and polls with it
    SYS_getcpu, SYS_fadvise64, SYS_preadv, SYS_pwritev, SYS_preadv2, SYS_pwritev2,
    SYS_copy_file_range, SYS_sendfile, SYS_sched_get_priority_max, SYS_sched_get_priority_min,
    SYS_sched_yield, SYS_sched_getaffinity, SYS_sched_getparam, SYS_sched_getscheduler,
    SYS_getpriority, SYS_exit, SYS_exit_group, SYS_wait4, SYS_waitid,
    SYS_getpid, SYS_gettid, SYS_getppid, SYS_getpgid, SYS_getsid, SYS_getuid, SYS_geteuid,
    SYS_getgid, SYS_getegid, SYS_getgroups, SYS_getresuid, SYS_getresgid, SYS_getrusage,
    SYS_times, SYS_uname, SYS_sysinfo, SYS_getrandom, SYS_clock_gettime, SYS_clock_getres,
    SYS_gettimeofday, SYS_nanosleep, SYS_clock_nanosleep, SYS_ppoll, SYS_pselect6,
    SYS_epoll_create1, SYS_epoll_ctl, SYS_epoll_pwait, SYS_eventfd2,
#ifdef SYS_futex_waitv
    SYS_futex_waitv,
#endif
#if defined(__x86_64__)
    SYS_open, SYS_stat, SYS_lstat, SYS_access, SYS_getdents, SYS_readlink, SYS_dup2, SYS_pipe,
    SYS_mkdir, SYS_rmdir, SYS_unlink, SYS_rename, SYS_poll, SYS_select, SYS_time, SYS_alarm,
    SYS_pause, SYS_getpgrp, SYS_arch_prctl, SYS_epoll_wait, SYS_getrlimit,
#endif
};

// System calls the zygote itself needs besides kAllowed (to fork, watch and confine children).
// Children inherit this filter, and their own small filter takes these away again.
const long kZygoteOnly[] = {
    SYS_clone, SYS_kill, SYS_tgkill, SYS_rt_sigqueueinfo, SYS_rt_tgsigqueueinfo, SYS_setpgid,
    SYS_pidfd_open, SYS_sched_setscheduler, SYS_setpriority, SYS_prlimit64, SYS_prctl,
    SYS_capset, SYS_setgroups, SYS_setresuid, SYS_setresgid, SYS_landlock_create_ruleset,
    SYS_landlock_add_rule, SYS_landlock_restrict_self, SYS_seccomp, SYS_fchownat, SYS_fchown,
    SYS_fchmodat, SYS_fchmod,
#if defined(__x86_64__)
    SYS_chown,
#endif
};

// Layer 1, installed once in the zygote: an allowlist (everything else EPERM). No exec, no
// sockets, no ptrace, no mounts or namespaces, no new processes except through clone.
std::vector<sock_filter> zygote_filter() {
  Filter f;
  f.stmt(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch));
  f.jump(BPF_JMP | BPF_JEQ | BPF_K, kArch, 1, 0);
  f.stmt(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
  f.load_nr();
#if defined(__x86_64__)
  f.jump(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1);  // x32 ABI
  f.stmt(BPF_RET | BPF_K, deny(EPERM));
#endif
  // clone3 hides its flags in memory: ENOSYS makes glibc fall back to clone, whose flags the
  // child filter can read.
  f.simple(SYS_clone3, deny(ENOSYS));
  f.simple(SYS_ioctl, deny(ENOTTY));
  for (long nr : kAllowed) f.simple(nr, kAllow);
  for (long nr : kZygoteOnly) f.simple(nr, kAllow);
  f.stmt(BPF_RET | BPF_K, deny(EPERM));
  return f.prog();
}

// Layer 2, per child, kept short (the kernel analyses a filter per system call number when it
// is attached: ~0.4 ms for 300 instructions, under 0.1 ms for this one). It narrows the
// zygote-only calls: signals only to itself (pid 0 is its own process group, which holds
// only itself), threads but no processes, limits read but never set, no scheduling, identity,
// ownership, mode or confinement changes.
std::vector<sock_filter> child_filter(pid_t self, bool forbid_writes) {
  Filter f;
  f.load_nr();
  const uint32_t me = static_cast<uint32_t>(self);
  f.guarded(SYS_kill, arg_in(0, {me, 0}));
  f.guarded(SYS_tgkill, arg_in(0, {me}));
  f.guarded(SYS_rt_sigqueueinfo, arg_in(0, {me}));
  f.guarded(SYS_rt_tgsigqueueinfo, arg_in(0, {me}));
  f.guarded(SYS_clone, {ld(arg_lo(0)), jset(CLONE_THREAD, 0, 1), ret(kAllow), ret(deny(EPERM))});
  f.guarded(SYS_prlimit64, {ld(arg_lo(2)), jeq(0, 0, 3), ld(arg_hi(2)), jeq(0, 0, 1), ret(kAllow),
                            ret(deny(EPERM))});
  f.guarded(SYS_prctl, arg_in(0, {PR_SET_NAME, PR_GET_NAME, PR_GET_DUMPABLE, PR_GET_SECCOMP,
                                  PR_GET_NO_NEW_PRIVS}));
  for (long nr : kZygoteOnly) {
    bool narrowed = nr == SYS_kill || nr == SYS_tgkill || nr == SYS_rt_sigqueueinfo ||
                    nr == SYS_rt_tgsigqueueinfo || nr == SYS_clone || nr == SYS_prlimit64 ||
                    nr == SYS_prctl;
    if (!narrowed) f.simple(nr, deny(EPERM));
  }
  if (forbid_writes) {
    // No Landlock: refuse every open that could write, and every directory change.
    const uint32_t wr = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND;
    f.guarded(SYS_openat, {ld(arg_lo(2)), jset(wr, 0, 1), ret(deny(EACCES)), ret(kAllow)});
#if defined(__x86_64__)
    f.guarded(SYS_open, {ld(arg_lo(1)), jset(wr, 0, 1), ret(deny(EACCES)), ret(kAllow)});
    for (long nr : {SYS_mkdir, SYS_rmdir, SYS_unlink, SYS_rename, SYS_truncate})
      f.simple(nr, deny(EACCES));
#endif
    for (long nr : {SYS_mkdirat, SYS_unlinkat, SYS_renameat, SYS_renameat2})
      f.simple(nr, deny(EACCES));
  }
  f.stmt(BPF_RET | BPF_K, kAllow);
  return f.prog();
}

bool install(std::vector<sock_filter> prog) {
  sock_fprog fprog{static_cast<unsigned short>(prog.size()), prog.data()};
  return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) == 0;
}

[[noreturn]] void fail(int code) { _exit(code); }

uint64_t vm_bytes() {
  FILE* f = fopen("/proc/self/statm", "re");
  unsigned long pages = 0;
  if (f) {
    if (fscanf(f, "%lu", &pages) != 1) pages = 0;
    fclose(f);
  }
  return static_cast<uint64_t>(pages) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

void set_limit(int resource, uint64_t value) {
  rlimit rl{value, value};
  if (setrlimit(resource, &rl) != 0) fail(122);
}

struct CapHeader {
  uint32_t version;
  int pid;
};
struct CapData {
  uint32_t effective, permitted, inheritable;
};

void drop_capabilities() {
  CapHeader h{0x20080522, 0};  // _LINUX_CAPABILITY_VERSION_3
  CapData d[2] = {};
  syscall(SYS_capset, &h, d);
}

bool write_file(const char* path, const std::string& text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = write_all(fd, text.data(), text.size());
  close(fd);
  return ok;
}

}  // namespace

int landlock_abi() {
  long v = syscall(SYS_landlock_create_ruleset, nullptr, 0, 1u /* VERSION */);
  return v < 0 ? 0 : static_cast<int>(v);
}

// Back the preloaded heap with transparent huge pages: a fork then copies one PMD entry per
// 2 MiB instead of 512 PTEs, and the child's exit frees as few. About halves the fork cost.
void collapse_heap() {
  FILE* f = fopen("/proc/self/maps", "re");
  if (!f) return;
  char line[512];
  const uintptr_t huge = 2u << 20;
  while (fgets(line, sizeof line, f)) {
    unsigned long lo = 0, hi = 0;
    char perms[8] = {0}, path[256] = {0};
    if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %255s", &lo, &hi, perms, path) < 3) continue;
    if (strcmp(perms, "rw-p") != 0 || (path[0] && strcmp(path, "[heap]") != 0)) continue;
    uintptr_t a = (lo + huge - 1) & ~(huge - 1), b = hi & ~(huge - 1);
    if (b <= a) continue;
    madvise(reinterpret_cast<void*>(a), b - a, 25 /* MADV_COLLAPSE, Linux 6.1 */);
  }
  fclose(f);
}

Features prepare_zygote(const SandboxConfig& cfg, const std::string& base) {
  Features feat;
  feat.landlock_abi = landlock_abi();
  // As root, Landlock (when present) keeps programs out of other files and processes, so they
  // keep uid 0 without capabilities and can still import from a root-only prefix. Without
  // Landlock they run as nobody instead.
  if (geteuid() == 0) {
    feat.netns = unshare(CLONE_NEWNET) == 0;
  } else {
    uid_t uid = geteuid();
    gid_t gid = getegid();
    if (unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0) {
      // Map only ourselves, so files keep their owners and nothing new becomes reachable.
      write_file("/proc/self/setgroups", "deny");
      write_file("/proc/self/uid_map", std::to_string(uid) + " " + std::to_string(uid) + " 1");
      write_file("/proc/self/gid_map", std::to_string(gid) + " " + std::to_string(gid) + " 1");
      feat.netns = true;
    }
  }
  malloc_trim(0);  // consolidate now, or every child would, dirtying (copying) heap pages
  collapse_heap();
  feat.base_vm = vm_bytes();
  if (feat.landlock_abi > 0) {
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    if (!landlock_zygote(feat.landlock_abi, cfg, base)) feat.landlock_abi = 0;
  }
  feat.uid_dropped = geteuid() == 0 && feat.landlock_abi == 0;
  prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  feat.seccomp = install(zygote_filter());
  return feat;
}

void enter_sandbox(const SandboxConfig& cfg, const Features& feat, const std::string& dir,
                   uint64_t cpu_seconds, pid_t zygote) {
  if (setpgid(0, 0) != 0) fail(121);
  if (chdir(dir.c_str()) != 0) fail(121);
  set_limit(RLIMIT_AS, feat.base_vm + ((cfg.memory_mb + 64) << 20));
  if (cpu_seconds) {
    rlimit rl{cpu_seconds, cpu_seconds + 1};
    if (setrlimit(RLIMIT_CPU, &rl) != 0) fail(122);
  }
  set_limit(RLIMIT_FSIZE, cfg.fsize_mb << 20);
  set_limit(RLIMIT_NOFILE, cfg.nofile);
  set_limit(RLIMIT_CORE, 0);
  set_limit(RLIMIT_MEMLOCK, 0);
  set_limit(RLIMIT_MSGQUEUE, 0);
  if (feat.uid_dropped) {
    constexpr uid_t kNobody = 65534;
    if (setgroups(0, nullptr) != 0 || setresgid(kNobody, kNobody, kNobody) != 0 ||
        setresuid(kNobody, kNobody, kNobody) != 0)
      fail(123);
  } else {
    drop_capabilities();
  }
  // After the uid change, which clears it: die with the zygote.
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != zygote) fail(124);
  prctl(PR_SET_DUMPABLE, 0);
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail(125);
  bool landlocked = feat.landlock_abi > 0 && landlock_child(feat.landlock_abi, dir);
  if (!install(child_filter(getpid(), !landlocked))) fail(126);
}

}  // namespace rlkd
