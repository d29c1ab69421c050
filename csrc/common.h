// Shared declarations of the sandboxed program executor: wire records, statuses, helpers.
//
// Three kinds of processes talk over pipes with fixed little binary records (never pickle):
//   host (the trainer, C++ threads)  --Request-->  zygote (lean Python, forks children)
//   zygote  --Request-->  worker child (isolation="worker" only)
//   child/worker  --Result-->  zygote  --Result-->  host
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace rlkd {

using Clock = std::chrono::steady_clock;

enum Status : uint8_t { kOk = 0, kError = 1, kTimeout = 2, kCrash = 3, kNonNumeric = 4, kInfra = 5 };

// Result flags.
constexpr uint8_t kHasValue = 1;  // `value` holds the strict numeric value
constexpr uint8_t kHasReft = 2;   // `reft` holds float(result) as ReFT computes it
constexpr uint8_t kDirty = 4;     // worker: the program changed interpreter state; replace me
constexpr uint8_t kHello = 8;     // zygote start-up record: err holds its feature line

constexpr uint32_t kReqMagic = 0x52514b52;  // "RKQR"
constexpr uint32_t kResMagic = 0x53524b52;  // "RKRS"
constexpr size_t kMaxErr = 512;             // bytes of error text kept
constexpr size_t kMaxSource = 64u << 20;    // bigger programs are refused by the host

#pragma pack(push, 1)
struct RequestHeader {
  uint32_t magic;
  uint32_t src_len;
  uint64_t job;
  uint32_t timeout_ms;
  uint8_t conventions;
  uint8_t pad[3];
};
struct ResultHeader {
  uint32_t magic;
  uint64_t job;
  uint8_t status;
  uint8_t flags;
  uint16_t err_len;
  double value;
  double reft;
  double elapsed;  // seconds from the program's start to its result (set by the zygote)
};
#pragma pack(pop)

struct Result {
  uint8_t status = kInfra;
  uint8_t flags = 0;
  double value = 0.0;
  double reft = 0.0;
  double elapsed = 0.0;
  std::string err;
};

// Limits and policy applied to every program process (set in the zygote from its config).
struct SandboxConfig {
  uint64_t memory_mb = 1024;       // address space the program may add to the interpreter's
  uint64_t fsize_mb = 16;          // largest file it may write
  uint64_t nofile = 64;            // open descriptors
  std::vector<std::string> read_roots;  // the only trees it may read (Landlock)
};

// Sandbox features this kernel offered, found when the zygote starts.
struct Features {
  int landlock_abi = 0;  // 0: unavailable (then seccomp forbids opening files for writing)
  bool netns = false;    // zygote (and so every child) sits in an empty network namespace
  bool uid_dropped = false;
  uint64_t base_vm = 0;  // the zygote's address space size after preloading
  bool seccomp = false;  // the zygote's own filter is in place (children add theirs)
};

// --- io helpers (io.cpp) ---
bool write_all(int fd, const void* buf, size_t n);
// Reads exactly n bytes; false on EOF/error. Blocking fd.
bool read_exact(int fd, void* buf, size_t n);
void remove_tree(const std::string& path);
std::string encode_result(uint64_t job, const Result& r);
int64_t ms_until(Clock::time_point t);

// --- sandbox.cpp ---
// Once in the zygote: namespaces, huge-page heap, the Landlock layer shared by all children.
Features prepare_zygote(const SandboxConfig& cfg, const std::string& base);
// Called in a freshly forked child: after it returns the process is confined. Never fails
// silently: on any error it writes nothing and _exit(121)s, which the zygote reports as a crash.
void enter_sandbox(const SandboxConfig& cfg, const Features& feat, const std::string& dir,
                   uint64_t cpu_seconds, pid_t zygote);
int landlock_abi();

}  // namespace rlkd
