#include "plugins/PluginProbe.hpp"

#include "config/Config.hpp"
#include "eventlog/EventLog.hpp"
#include "plugins/PluginRuntime.hpp"
#include "update/Semver.hpp"

#include <certconn/errno_message.hpp>
#include <certconn/events.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <iostream>

extern char** environ;  // NOLINT(readability-redundant-declaration): POSIX, for posix_spawn

namespace certconn::host {

namespace json = boost::json;
namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

constexpr std::size_t kMaxResultBytes = std::size_t{1} * 1024 * 1024;
constexpr std::size_t kStderrTail = 2048;

class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    Fd(Fd&& o) noexcept : fd_(o.release()) {}
    Fd& operator=(Fd&& o) noexcept {
        reset(o.release());
        return *this;
    }
    ~Fd() { reset(); }
    int get() const { return fd_; }
    int release() { return std::exchange(fd_, -1); }
    void reset(int fd = -1) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = fd;
    }

private:
    int fd_ = -1;
};

std::pair<Fd, Fd> make_pipe() {
    std::array<int, 2> fds{};
    if (::pipe2(fds.data(), O_CLOEXEC) != 0) throw std::runtime_error("pipe: " + sdk::errno_message(errno));
    return {Fd(fds[0]), Fd(fds[1])};
}

std::string signal_name(int sig) {
    const char* abbrev = ::sigabbrev_np(sig);
    return abbrev != nullptr ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

std::string phase_of(const ProbeRequest& r) {
    return r.init ? "loading, init or health" : "loading";
}

json::object identity_json(const PluginIdentity& id) {
    return {{"kind", kind_name(id.kind)},
            {"name", id.name},
            {"version", id.version},
            {"release_date", id.release_date},
            {"abi", std::to_string(id.abi_major) + "." + std::to_string(id.abi_minor)}};
}

}  // namespace

ProbeResult run_probe(const ProbeRequest& request) {
    ProbeResult result;
    result.event_id = CC_EV_PluginProbeFailed;
    const std::string label = "plugin file " + request.file.string() + ": probe: ";
    std::error_code ec;
    if (request.init) {
        fs::remove_all(request.scratch_dir, ec);
        fs::create_directories(request.scratch_dir, ec);
        if (ec) {
            result.error = label + "cannot create scratch directory " + request.scratch_dir.string() + ": " + ec.message();
            return result;
        }
        ::chmod(request.scratch_dir.c_str(), 0700);
    }
    struct ScratchCleanup {
        const ProbeRequest& r;
        ~ScratchCleanup() {
            std::error_code e;
            if (r.init) fs::remove_all(r.scratch_dir, e);
        }
    } cleanup{request};

    auto [in_read, in_write] = make_pipe();
    auto [out_read, out_write] = make_pipe();
    auto [err_read, err_write] = make_pipe();
    std::vector<std::string> args = {request.executable.string(), "plugin-probe", "--file", request.file.string()};
    if (!request.service_account.empty()) args.insert(args.end(), {"--service-account", request.service_account});
    if (request.init) args.insert(args.end(), {"--init", "--scratch", request.scratch_dir.string()});
    std::vector<char*> argv;
    argv.reserve(args.size() + 1);
    for (auto& a : args)
        argv.push_back(a.data());
    argv.push_back(nullptr);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in_read.get(), 0);
    posix_spawn_file_actions_adddup2(&actions, out_write.get(), 1);
    posix_spawn_file_actions_adddup2(&actions, err_write.get(), 2);
    // Nothing else of the daemon's (listeners, connections, log files) reaches plugin code.
    posix_spawn_file_actions_addclosefrom_np(&actions, 3);
    // The daemon blocks SIGTERM/SIGINT/SIGHUP for sigwait(); the child starts with none blocked.
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);
    // Its own process group: a deadline kills whatever the plugin forked, too.
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP);
    pid_t pid = -1;
    const int rc = ::posix_spawn(&pid, request.executable.c_str(), &actions, &attr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    in_read.reset();
    out_write.reset();
    err_write.reset();
    if (rc != 0) {
        result.error = label + "cannot start " + request.executable.string() + ": " + sdk::errno_message(rc);
        result.could_not_run = true;
        return result;
    }

    // The spec is small (a configuration section); the child reads all of stdin first.
    const std::string& spec = request.init ? request.init_spec_json : std::string();
    for (std::size_t off = 0; off < spec.size();) {
        const ssize_t n = ::write(in_write.get(), spec.data() + off, spec.size() - off);
        if (n <= 0) break;
        off += static_cast<std::size_t>(n);
    }
    in_write.reset();

    std::string out, err;
    bool timed_out = false;
    const auto deadline = steady_clock::now() + request.timeout;
    std::array<pollfd, 2> fds{pollfd{out_read.get(), POLLIN, 0}, pollfd{err_read.get(), POLLIN, 0}};
    while (fds[0].fd >= 0 || fds[1].fd >= 0) {
        const auto left = std::chrono::duration_cast<milliseconds>(deadline - steady_clock::now()).count();
        if (left <= 0) {
            timed_out = true;
            break;
        }
        const int n = ::poll(fds.data(), fds.size(), static_cast<int>(std::min<long long>(left, 1000)));
        if (n < 0 && errno != EINTR) break;
        for (std::size_t i = 0; i < fds.size(); ++i) {
            if (fds[i].fd < 0 || fds[i].revents == 0) continue;
            std::array<char, 4096> buf{};
            const ssize_t got = ::read(fds[i].fd, buf.data(), buf.size());
            if (got <= 0) {
                fds[i].fd = -1;
                continue;
            }
            std::string& into = i == 0 ? out : err;
            if (i == 0 && out.size() + static_cast<std::size_t>(got) > kMaxResultBytes) {
                fds[i].fd = -1;  // a runaway child: stop reading; judged below
                continue;
            }
            into.append(buf.data(), static_cast<std::size_t>(got));
            if (i == 1 && err.size() > 4 * kStderrTail) err.erase(0, err.size() - kStderrTail);
        }
    }
    int status = 0;
    ::kill(-pid, SIGKILL);  // whatever the plugin left running in the group (the child itself has exited or hangs)
    if (timed_out) {
        ::kill(-pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        result.error =
            label + "did not finish " + phase_of(request) + " within " + std::to_string(request.timeout.count()) + " ms; killed";
        return result;
    }
    // Output closed: the child is exiting (or closed its descriptors and hangs: bounded wait).
    for (;;) {
        const pid_t w = ::waitpid(pid, &status, WNOHANG);
        if (w == pid) break;
        if (steady_clock::now() >= deadline) {
            ::kill(-pid, SIGKILL);
            ::waitpid(pid, &status, 0);
            result.error = label + "did not exit within the probe deadline; killed";
            return result;
        }
        ::usleep(5000);
    }
    if (err.size() > kStderrTail) err.erase(0, err.size() - kStderrTail);
    while (!err.empty() && (err.back() == '\n' || err.back() == ' '))
        err.pop_back();
    const std::string tail = err.empty() ? "" : " (its last output: " + err + ")";
    if (WIFSIGNALED(status)) {
        result.error = label + "crashed (" + signal_name(WTERMSIG(status)) + ") during " + phase_of(request) + tail;
        return result;
    }
    json::value v = json::parse(out, ec);
    if (ec || !v.is_object()) {
        result.error = label + "exited with status " + std::to_string(WEXITSTATUS(status)) + " without a result" + tail;
        return result;
    }
    const json::object& o = v.as_object();
    if (const auto* accepted = o.if_contains("accepted"); accepted && accepted->is_bool() && !accepted->as_bool()) {
        const auto* id = o.if_contains("event_id");
        const auto* reason = o.if_contains("reason");
        result.event_id =
            id && id->is_int64() && id->as_int64() >= CC_EV_PluginDirectoryUnsafe && id->as_int64() <= CC_EV_PluginInitFailed
                ? static_cast<std::uint32_t>(id->as_int64())
                : CC_EV_PluginProbeFailed;
        result.error = reason && reason->is_string() ? std::string(reason->as_string()) : label + "refused";
        return result;
    }
    if (const auto* e = o.if_contains("error"); e && e->is_string()) {
        result.error = label + std::string(e->as_string());
        return result;
    }
    try {
        PluginIdentity id;
        const std::string kind(o.at("kind").as_string());
        id.kind = kind == "feature" ? CC_KIND_FEATURE : kind == "ca" ? CC_KIND_CA : CC_KIND_TENANT;
        id.name = o.at("name").as_string();
        id.version = o.at("version").as_string();
        id.release_date = o.at("release_date").as_string();
        // Plugin code ran in the child and could have written anything: the daemon builds
        // paths from these, so they are checked as the loader checks them.
        if (!valid_plugin_name(id.name) || !update::is_semver(id.version)) {
            result.error = label + "answered an invalid name or version";
            return result;
        }
        result.identity = id;
        if (const auto* h = o.if_contains("health")) result.health_json = json::serialize(*h);
    } catch (const std::exception&) {
        result.error = label + "answered an incomplete identity";
        return result;
    }
    if (WEXITSTATUS(status) != 0) {
        result.error = label + "exited with status " + std::to_string(WEXITSTATUS(status)) + tail;
        return result;
    }
    result.ok = true;
    result.event_id = 0;
    return result;
}

namespace {

// Builds the configuration a probe's init sees: only the probed plugin's sections, a scratch
// state directory.
std::shared_ptr<const Config> probe_config(const json::object& spec, const PluginIdentity& id, const fs::path& scratch) {
    Config cfg;
    cfg.host.state_dir = scratch;
    cfg.host.keys_dir = scratch / "keys";
    cfg.host.log_dir = scratch / "log";
    const json::object empty;
    const auto* section = spec.if_contains("section");
    const json::object& settings = section && section->is_object() ? section->as_object() : empty;
    switch (id.kind) {
        case CC_KIND_FEATURE:
            cfg.features[id.name] = true;
            cfg.feature_sections[id.name] = settings;
            break;
        case CC_KIND_TENANT: cfg.tenants["default"] = PluginSection{id.name, settings, {}}; break;
        case CC_KIND_CA:
            if (const auto* cas = spec.if_contains("cas"); cas && cas->is_object())
                for (const auto& [name, ca] : cas->as_object())
                    if (ca.is_object()) cfg.cas[std::string(name)] = PluginSection{id.name, ca.as_object(), {}};
            break;
    }
    return std::make_shared<const Config>(std::move(cfg));
}

}  // namespace

int probe_child_main(const fs::path& file, bool init, const fs::path& scratch_dir, const std::string& service_account) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the daemon that asked
    // The result goes to the original stdout; whatever plugin code prints goes to stderr.
    const int result_fd = ::dup(1);
    ::dup2(2, 1);
    auto answer = [&](const json::object& o, int code) {
        const std::string text = json::serialize(o) + "\n";
        for (std::size_t off = 0; off < text.size();) {
            const ssize_t n = ::write(result_fd, text.data() + off, text.size() - off);
            if (n <= 0) break;
            off += static_cast<std::size_t>(n);
        }
        return code;
    };
    std::string spec_text;
    if (init) {
        std::array<char, 4096> buf{};
        ssize_t n = 0;
        while ((n = ::read(0, buf.data(), buf.size())) > 0 && spec_text.size() < kMaxResultBytes)
            spec_text.append(buf.data(), static_cast<std::size_t>(n));
    }
    PluginFileReport report;
    auto lib = open_plugin(file, LoaderPolicy::for_service_account(service_account), report);
    if (!lib) return answer({{"accepted", false}, {"event_id", report.event_id}, {"reason", report.reason}}, 2);
    json::object out = identity_json(lib->identity);
    out["accepted"] = true;
    if (!init) return answer(out, 0);

    std::error_code ec;
    json::value spec = json::parse(spec_text, ec);
    if (ec || !spec.is_object()) return answer({{"error", "the daemon passed no valid init specification"}}, 2);
    const auto cfg = probe_config(spec.as_object(), lib->identity, scratch_dir);
    EventLog log(EventLogOptions{{}, 0, 0, false, false, true, milliseconds(0)});
    std::string error;
    std::string health;
    {
        PluginRuntime runtime(log, cfg);
        auto gen = runtime.instantiate(lib, error, cfg);
        if (!gen) return answer({{"error", "init failed: " + error}}, 3);
        for (const auto& [ca, why] : gen->ca_failures)
            return answer({{"error", "CA '" + ca + "' could not be opened: " + why}}, 3);
        health = runtime.health(*gen);
        gen.reset();
        runtime.wait_released();  // destroy runs here, in the probe, too
    }
    json::value h = json::parse(health, ec);
    if (ec || !h.is_object()) return answer({{"error", "health answered invalid JSON"}}, 3);
    const auto* healthy = h.as_object().if_contains("healthy");
    if (!healthy || !healthy->is_bool() || !healthy->as_bool())
        return answer({{"error", "unhealthy after init: " + json::serialize(h)}}, 3);
    out["health"] = h;
    return answer(out, 0);
}

}  // namespace certconn::host
