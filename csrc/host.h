// Host side of the executor: zygote processes and the threads that feed them. See host.cpp.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common.h"

namespace rlkd {

struct HostOptions {
  std::vector<std::string> argv;  // zygote command; base dir and host pid are appended
  std::vector<std::string> env;   // its whole environment (nothing is inherited)
  int workers = 2;                // zygote processes
  int slots = 4;                  // programs in flight per zygote
  double grace_s = 2.0;           // a zygote silent this long past a deadline is replaced
  double start_timeout_s = 120.0;
};

class Executor {
 public:
  explicit Executor(HostOptions opts);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Runs every source; blocks until all have a result. Thread-safe; call without the GIL.
  std::vector<Result> run(std::vector<std::string> sources, uint32_t timeout_ms,
                          uint8_t conventions);
  void close();
  std::vector<int> zygote_pids();
  int respawns();
  std::string features();

 private:
  struct Batch;
  struct Job;
  struct Zyg;
  void dispatch(Zyg* z);
  bool spawn(Zyg* z, std::string* err);
  void reap(Zyg* z, const std::string& why, bool graceful = false);
  bool send_jobs(Zyg* z, std::vector<Job>& jobs);
  void read_results(Zyg* z, bool* eof);
  void fail_queued(const std::string& why);
  static void complete(Job& job, const Result& r);
  void wake_all();

  HostOptions opts_;
  pid_t owner_;
  unsigned long long owner_start_ = 0;  // names our scratch directories with owner_
  std::mutex m_;
  std::condition_variable started_cv_;
  std::deque<Job> queue_;
  std::vector<std::unique_ptr<Zyg>> zygs_;
  uint64_t next_id_ = 1;
  bool stop_ = false;
  int started_ = 0;
  int respawns_ = 0;
  std::string features_;
};

}  // namespace rlkd
