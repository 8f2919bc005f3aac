#include "update/UpdateState.hpp"

#include <certconn/crypto.hpp>
#include <certconn/errno_message.hpp>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <stdexcept>

namespace certconn::host::update {

namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

std::string str(const json::object& o, const char* key) {
    const auto* v = o.if_contains(key);
    return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

std::uint64_t num(const json::object& o, const char* key) {
    const auto* v = o.if_contains(key);
    if (v && v->is_uint64()) return v->as_uint64();
    if (v && v->is_int64() && v->as_int64() >= 0) return static_cast<std::uint64_t>(v->as_int64());
    return 0;
}

std::optional<json::object> read_object(const fs::path& file) {
    std::error_code ec;
    if (!fs::exists(file, ec)) return std::nullopt;
    const std::string text = crypto::read_file(file, "update state");
    json::value v = json::parse(text, ec);
    if (ec || !v.is_object()) throw std::runtime_error(file.string() + " is not a JSON object");
    return v.as_object();
}

}  // namespace

UpdateState UpdateState::load(const fs::path& file) {
    UpdateState s;
    const auto o = read_object(file);
    if (!o) return s;
    if (const auto* repos = o->if_contains("repositories"); repos && repos->is_object()) {
        for (const auto& [name, v] : repos->as_object()) {
            if (!v.is_object()) continue;
            const auto& r = v.as_object();
            RepositoryState rs;
            rs.sequence = num(r, "sequence");
            rs.index_sha256 = str(r, "index_sha256");
            rs.expires = str(r, "expires");
            rs.last_check = str(r, "last_check");
            rs.last_result = str(r, "last_result");
            if (const auto* e = r.if_contains("entries"); e && e->is_array()) rs.entries = e->as_array();
            s.repositories[std::string(name)] = std::move(rs);
        }
    }
    if (const auto* bad = o->if_contains("bad"); bad && bad->is_object()) {
        for (const auto& [key, v] : bad->as_object()) {
            if (!v.is_object()) continue;
            const auto& b = v.as_object();
            s.bad[std::string(key)] = BadVersion{str(b, "repository"), num(b, "sequence"), str(b, "sha256"), str(b, "reason")};
        }
    }
    for (const char* section : {"pins", "support"}) {
        if (const auto* m = o->if_contains(section); m && m->is_object())
            for (const auto& [key, v] : m->as_object())
                if (v.is_string()) (std::string_view(section) == "pins" ? s.pins : s.support)[std::string(key)] = v.as_string();
    }
    return s;
}

void UpdateState::save(const fs::path& file) const {
    json::object repos;
    for (const auto& [name, r] : repositories)
        repos[name] = json::object{{"sequence", r.sequence},     {"index_sha256", r.index_sha256}, {"expires", r.expires},
                                   {"last_check", r.last_check}, {"last_result", r.last_result},   {"entries", r.entries}};
    json::object bad_versions;
    for (const auto& [key, b] : bad)
        bad_versions[key] =
            json::object{{"repository", b.repository}, {"sequence", b.sequence}, {"sha256", b.sha256}, {"reason", b.reason}};
    json::object pin_map;
    for (const auto& [k, v] : pins)
        pin_map[k] = v;
    json::object support_map;
    for (const auto& [k, v] : support)
        support_map[k] = v;
    crypto::write_file_atomic(
        file, json::serialize(
                  json::object{{"repositories", repos}, {"bad", bad_versions}, {"pins", pin_map}, {"support", support_map}}));
}

json::object Journal::to_json() const {
    return json::object{{"step", step},
                        {"repository", repository},
                        {"kind", kind},
                        {"name", name},
                        {"version", version},
                        {"sha256", sha256},
                        {"sequence", sequence},
                        {"previous_version", previous_version},
                        {"previous_file", previous_file},
                        {"file", file},
                        {"baseline_calls", baseline_calls},
                        {"baseline_failures", baseline_failures},
                        {"started", started}};
}

Journal Journal::from_json(const json::object& o) {
    Journal j;
    j.step = str(o, "step");
    j.repository = str(o, "repository");
    j.kind = str(o, "kind");
    j.name = str(o, "name");
    j.version = str(o, "version");
    j.sha256 = str(o, "sha256");
    j.sequence = num(o, "sequence");
    j.previous_version = str(o, "previous_version");
    j.previous_file = str(o, "previous_file");
    j.file = str(o, "file");
    j.baseline_calls = num(o, "baseline_calls");
    j.baseline_failures = num(o, "baseline_failures");
    j.started = str(o, "started");
    return j;
}

std::optional<Journal> Journal::load(const fs::path& file, std::string& problem) {
    try {
        const auto o = read_object(file);
        if (!o) return std::nullopt;
        return from_json(*o);
    } catch (const std::exception& e) {
        problem = e.what();
        return std::nullopt;
    }
}

void Journal::save(const fs::path& file) const {
    crypto::write_file_atomic(file, json::serialize(to_json()));
}

void Journal::clear(const fs::path& file) {
    std::error_code ec;
    fs::remove(file, ec);
    const int fd = ::open(file.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        ::fsync(fd);
        ::close(fd);
    }
}

VersionSelection selection_of(const UpdateState& state, const std::map<std::string, std::string>& config_pins) {
    VersionSelection s;
    s.pins = state.pins;
    for (const auto& [name, version] : config_pins)
        s.pins[name] = version;  // the configuration wins
    for (const auto& [key, b] : state.bad)
        s.bad.insert(key);
    return s;
}

VersionSelection persisted_selection(const fs::path& state_dir, const std::map<std::string, std::string>& config_pins) {
    try {
        return selection_of(UpdateState::load(state_dir / "update" / "state.json"), config_pins);
    } catch (const std::exception&) {
        return selection_of(UpdateState{}, config_pins);  // the manager reports the unreadable file when it starts
    }
}

}  // namespace certconn::host::update
