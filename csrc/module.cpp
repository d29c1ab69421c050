// Python bindings: `rlkd_fast._executor`. The public API lives in rlkd_fast/executor.py.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "common.h"
#include "host.h"
#include "zygote.h"

namespace py = pybind11;
using namespace rlkd;

namespace {

py::object decode(const std::string& s) {
  return py::reinterpret_steal<py::object>(
      PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace"));
}

py::list run(Executor& ex, std::vector<std::string> sources, uint32_t timeout_ms, int conv) {
  std::vector<Result> res;
  {
    py::gil_scoped_release nogil;
    res = ex.run(std::move(sources), timeout_ms, static_cast<uint8_t>(conv));
  }
  py::list out(res.size());
  for (size_t i = 0; i < res.size(); ++i) {
    const Result& r = res[i];
    py::object value = (r.flags & kHasValue) ? py::object(py::float_(r.value)) : py::none();
    py::object reft = (r.flags & kHasReft) ? py::object(py::float_(r.reft)) : py::none();
    out[i] = py::make_tuple(static_cast<int>(r.status), value, reft, decode(r.err), r.elapsed);
  }
  return out;
}

[[noreturn]] void zygote_main(int in_fd, int out_fd, const py::dict& cfg, py::object run_fn,
                              py::object clean_fn) {
  ZygoteConfig c;
  c.worker = cfg["worker"].cast<bool>();
  c.max_programs = cfg["max_programs"].cast<int>();
  c.demote = cfg["demote"].cast<bool>();
  c.active = cfg["active"].cast<int>();
  c.host_pid = cfg["host_pid"].cast<int>();
  c.base_dir = cfg["base_dir"].cast<std::string>();
  c.sandbox.memory_mb = cfg["memory_mb"].cast<uint64_t>();
  c.sandbox.fsize_mb = cfg["fsize_mb"].cast<uint64_t>();
  c.sandbox.nofile = cfg["nofile"].cast<uint64_t>();
  c.sandbox.read_roots = cfg["read_roots"].cast<std::vector<std::string>>();
  Zygote z(in_fd, out_fd, std::move(c), std::move(run_fn), std::move(clean_fn));
  z.serve_forever();
}

}  // namespace

PYBIND11_MODULE(_executor, m) {
  m.doc() = "C++ core of rlkd_fast.executor (zygotes, sandbox, binary records)";
  py::class_<Executor>(m, "Executor")
      .def(py::init([](std::vector<std::string> argv, std::vector<std::string> env, int workers,
                       int slots, double grace_s, double start_timeout_s) {
             HostOptions o;
             o.argv = std::move(argv);
             o.env = std::move(env);
             o.workers = workers;
             o.slots = slots;
             o.grace_s = grace_s;
             o.start_timeout_s = start_timeout_s;
             py::gil_scoped_release nogil;
             return new Executor(std::move(o));
           }),
           py::arg("argv"), py::arg("env"), py::arg("workers"), py::arg("slots"), py::arg("grace_s"),
           py::arg("start_timeout_s"))
      .def("run", &run, py::arg("sources"), py::arg("timeout_ms"), py::arg("conventions"))
      .def("close", &Executor::close, py::call_guard<py::gil_scoped_release>())
      .def("zygote_pids", &Executor::zygote_pids)
      .def("respawns", &Executor::respawns)
      .def("features", &Executor::features);
  m.def("zygote_main", &zygote_main, "Serve as a zygote (never returns).");
  m.def("landlock_abi", &landlock_abi, "Landlock ABI version of this kernel (0: none).");
  m.attr("STATUSES") = py::make_tuple("ok", "error", "timeout", "crash", "nonnumeric",
                                      "infra_error");
}
