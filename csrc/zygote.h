// The zygote's event loop; see zygote.cpp.
#pragma once

#include <pybind11/pybind11.h>
#include <unistd.h>

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "common.h"

namespace rlkd {

struct ZygoteConfig {
  bool worker = false;       // isolation="worker": long-lived confined workers
  int max_programs = 1000;   // a worker is replaced after this many programs
  bool demote = true;        // past 1/20 of the deadline in CPU: run only when idle
  int active = 2;            // young programs (< 30 ms) running at once
  pid_t host_pid = 0;
  std::string base_dir;      // per-program scratch directories are made below it
  SandboxConfig sandbox;
};

class Zygote {
 public:
  Zygote(int in_fd, int out_fd, ZygoteConfig cfg, pybind11::object run, pybind11::object clean);
  ~Zygote();
  [[noreturn]] void serve_forever() {
    serve();
    _exit(0);
  }
  void serve();

 private:
  struct Kid;
  Kid* spawn(const std::string* src, uint8_t conventions, uint32_t timeout_ms);
  [[noreturn]] void worker_loop();
  void start_job(uint64_t job, uint32_t timeout_ms, uint8_t conventions, const std::string& src);
  bool read_request();
  int start_pending();
  bool young(const Kid& k, Clock::time_point now) const;
  void drain(Kid* kid);
  void on_data(Kid* kid);
  void on_exit(Kid* kid);
  void finish(Kid* kid, Result r);
  void retire(Kid* kid);
  bool watched(const Kid& k) const;
  void maybe_demote(Kid* kid, Clock::time_point now);
  void pace_demoted(bool busy);
  static double cpu_ms(const Kid& kid);
  void set_policy(Kid* kid, int policy);
  void send(uint64_t job, const Result& r);
  [[noreturn]] void shutdown(int code);
  std::string new_dir();
  static Result crash(const std::string& why);
  static Result timeout_result(uint32_t timeout_ms);
  static Result parse(const ResultHeader& h, const std::string& err);

  int in_, out_;
  ZygoteConfig cfg_;
  pybind11::object run_, clean_;
  Features feat_;
  uint64_t seq_ = 0;
  std::vector<std::unique_ptr<Kid>> kids_;
  struct Pending {
    uint64_t job;
    uint32_t timeout_ms;
    uint8_t conventions;
    std::string src;
  };
  std::deque<Pending> pending_;
};

}  // namespace rlkd
