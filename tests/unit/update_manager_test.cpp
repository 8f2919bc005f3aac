// The update manager's state machine against a file:// repository signed with minisign and a
// stand-in for the connector (FakeHost: serves the highest version among the plugin directory's
// 0.1.0 and the files in <state_dir>/updates, honouring pins and bad marks like the loader).
// The real daemon with the real loader is tested in integration/update_test.cpp.
#include "support/SignedRepository.hpp"
#include "update/Semver.hpp"
#include "update/UpdateManager.hpp"

#include <certconn/events.h>

#include <catch2/catch.hpp>

#include <mutex>
#include <thread>

using namespace certconn::host;
using namespace certconn::host::update;
using namespace certconn::test;

namespace {

int semver_compare(const std::string& a, const std::string& b) {
    return certconn::host::update::compare_versions(a, b);
}

bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
        if (condition()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return condition();
}

struct FakeHost {
    fs::path plugin_file;  // serves 0.1.0
    fs::path updates;
    std::function<VersionSelection()> selection;
    std::mutex mutex;
    std::string version = "0.1.0";
    fs::path file;
    std::uint64_t calls = 0, failures = 0;
    bool healthy = true;
    int reloads = 0;

    UpdateHost host() {
        return UpdateHost{[this](bool with_health) {
                              std::lock_guard lock(mutex);
                              ServingPlugin p{CC_KIND_FEATURE, "updemo", version,     "2026-11-01", file,
                                              calls,           failures, std::nullopt};
                              if (with_health) p.healthy = healthy;
                              return std::vector<ServingPlugin>{p};
                          },
                          [this] { return reload(); }};
    }

    std::vector<PluginFileReport> reload() {
        const VersionSelection s = selection ? selection() : VersionSelection{};
        std::vector<std::pair<std::string, fs::path>> present = {{"0.1.0", plugin_file}};
        std::error_code ec;
        for (const auto& f : fs::directory_iterator(updates, ec)) {
            const std::string name = f.path().filename().string();
            const std::string prefix = "feature-updemo-";
            if (name.rfind(prefix, 0) == 0 && f.path().extension() == ".so")
                present.emplace_back(name.substr(prefix.size(), name.size() - prefix.size() - 3), f.path());
        }
        std::pair<std::string, fs::path> best;
        for (const auto& p : present) {
            if (s.bad.count(VersionSelection::key("updemo", p.first))) continue;
            if (auto pin = s.pins.find("updemo"); pin != s.pins.end() && pin->second != p.first) continue;
            if (best.first.empty() || semver_compare(p.first, best.first) > 0) best = p;
        }
        std::lock_guard lock(mutex);
        ++reloads;
        if (!best.first.empty() && best.first != version) {
            version = best.first;
            file = best.second;
            calls = failures = 0;  // a new generation
        }
        return {};
    }
};

struct Setup {
    TempDir dir;
    fs::path state = dir / "state";
    Signer k1{dir.path(), "k1"}, k2{dir.path(), "k2"};
    Repository repo{dir / "repo"};
    std::unique_ptr<EventLog> log = std::make_unique<EventLog>(
        EventLogOptions{dir / "log", 1024 * 1024, 1, false, false, false, std::chrono::milliseconds(0)});
    FakeHost fake;
    UpdateSettings settings;

    Setup() {
        fs::create_directories(state);
        fake.plugin_file = dir / "plugins" / "updemo.so";
        fake.file = fake.plugin_file;
        fake.updates = state / "updates";
        const std::string root1 = root_json(1, 1, {&k1});
        write_file(dir / "test.root.json", root1);
        write_file(dir / "test.root.json.minisig", sign(dir / "test.root.json", {&k1}));
        settings.mode = UpdateSettings::Mode::Off;
        settings.watch = std::chrono::seconds(2);
        UpdateRepository r;
        r.name = "test";
        r.url = "file://" + repo.dir.string() + "/";
        r.root = dir / "test.root.json";
        r.plugins = {"updemo"};
        settings.repositories = {r};
    }

    std::unique_ptr<UpdateManager> manager() {
        auto m = std::make_unique<UpdateManager>(settings, state, *log, fake.host());
        UpdateManager* raw = m.get();
        fake.selection = [raw] { return raw->selection(); };
        return m;
    }

    std::string events() {
        log->flush();
        return read_file(dir / "log" / "admin.jsonl") + read_file(dir / "log" / "operational.jsonl");
    }
    static bool has_event(const std::string& text, std::uint32_t id) {
        return text.find("\"id\":" + std::to_string(id) + ",") != std::string::npos;
    }
};

}  // namespace

TEST_CASE("update manager: apply installs, the watch passes, the journal is cleared") {
    Setup s;
    s.repo.publish_index(1, {{"update-echo-v2", "0.2.0"}}, {&s.k1});
    auto m = s.manager();
    m->start();
    const json::object r = m->command("update apply", {});
    INFO(json::serialize(r) << s.events());
    CHECK(r.at("exit_code").as_int64() == 0);
    CHECK(s.fake.version == "0.2.0");
    const fs::path placed = s.state / "updates" / "feature-updemo-0.2.0.so";
    REQUIRE(fs::exists(placed));
    CHECK((fs::status(placed).permissions() & fs::perms::all) == (fs::perms::owner_read | fs::perms::owner_write));
    CHECK(read_file(placed) == read_file(fixture("update", "update-echo-v2")));
    CHECK(fs::exists(s.state / "update" / "journal.json"));  // watching
    CHECK(eventually([&] { return !fs::exists(s.state / "update" / "journal.json"); }, std::chrono::seconds(10)));
    const std::string events = s.events();
    for (auto id :
         {CC_EV_UpdateChecked, CC_EV_UpdateAvailable, CC_EV_UpdateDownloaded, CC_EV_UpdateVerified, CC_EV_UpdateInstalled})
        CHECK(Setup::has_event(events, id));
    CHECK_FALSE(Setup::has_event(events, CC_EV_UpdateRolledBack));
    CHECK_THAT(json::serialize(m->command("update status", {})), Catch::Contains("up to date"));
}

TEST_CASE("update manager: unhealthy or failing more than before after publish -> rolled back, marked bad") {
    Setup s;
    s.repo.publish_index(1, {{"update-echo-v2", "0.2.0"}}, {&s.k1});
    s.settings.watch = std::chrono::seconds(30);
    s.fake.calls = 100;
    s.fake.failures = 1;  // the previous version's rate: 1%
    auto m = s.manager();
    m->start();
    m->command("update apply", {});
    REQUIRE(s.fake.version == "0.2.0");
    SECTION("health") {
        std::lock_guard lock(s.fake.mutex);
        s.fake.healthy = false;
    }
    SECTION("error rate") {
        std::lock_guard lock(s.fake.mutex);
        s.fake.calls = 40;
        s.fake.failures = 5;
    }
    INFO(s.events());
    CHECK(eventually([&] { return Setup::has_event(s.events(), CC_EV_UpdateRolledBack); }, std::chrono::seconds(10)));
    CHECK(s.fake.version == "0.1.0");
    CHECK_FALSE(fs::exists(s.state / "updates" / "feature-updemo-0.2.0.so"));
    CHECK(m->selection().bad.count("updemo@0.2.0") == 1);
    CHECK_FALSE(fs::exists(s.state / "update" / "journal.json"));
    // Not installed again, also after a restart (the mark is persisted).
    m.reset();
    auto again = s.manager();
    again->start();
    const json::object r = again->command("update apply", {});
    CHECK(s.fake.version == "0.1.0");
    CHECK_THAT(json::serialize(again->command("update status", {})), Catch::Contains("marked bad"));
}

TEST_CASE("update manager: a fair error rate during the watch is no reason to roll back") {
    Setup s;
    s.repo.publish_index(1, {{"update-echo-v2", "0.2.0"}}, {&s.k1});
    s.fake.calls = 100;
    s.fake.failures = 10;  // 10% before
    auto m = s.manager();
    m->start();
    m->command("update apply", {});
    {
        std::lock_guard lock(s.fake.mutex);
        s.fake.calls = 100;
        s.fake.failures = 12;  // 12% now: within 2x
    }
    CHECK(eventually([&] { return !fs::exists(s.state / "update" / "journal.json"); }, std::chrono::seconds(10)));
    CHECK(s.fake.version == "0.2.0");
    CHECK_FALSE(Setup::has_event(s.events(), CC_EV_UpdateRolledBack));
}

TEST_CASE("update manager: an interrupted update is rolled back before placement, resumed after") {
    Setup s;
    s.repo.publish_index(1, {{"update-echo-v2", "0.2.0"}}, {&s.k1});
    fs::create_directories(s.state / "update");
    Journal j;
    j.repository = "test";
    j.kind = "feature";
    j.name = "updemo";
    j.version = "0.2.0";
    j.previous_version = "0.1.0";
    j.previous_file = s.fake.plugin_file.string();
    j.file = (s.state / "updates" / "feature-updemo-0.2.0.so").string();

    SECTION("downloaded, not placed: rolled back, temporary files removed") {
        fs::create_directories(s.state / "updates");
        write_file(s.state / "updates" / "feature-updemo-0.2.0.so.tmp", "partial");
        j.step = "downloaded";
        j.save(s.state / "update" / "journal.json");
        auto m = s.manager();
        m->start();
        const std::string events = s.events();
        CHECK(Setup::has_event(events, CC_EV_UpdateResumed));
        CHECK_THAT(events, Catch::Contains("rolled back: the file was not placed"));
        CHECK_FALSE(fs::exists(s.state / "update" / "journal.json"));
        CHECK(fs::is_empty(s.state / "updates"));
        CHECK(s.fake.version == "0.1.0");
    }
    SECTION("placed and serving: the watch resumes and completes") {
        fs::create_directories(s.state / "updates");
        fs::copy_file(fixture("update", "update-echo-v2"), j.file);
        s.fake.reload();  // the loader at start chose the placed file
        REQUIRE(s.fake.version == "0.2.0");
        j.step = "placed";
        j.save(s.state / "update" / "journal.json");
        auto m = s.manager();
        m->start();
        CHECK_THAT(s.events(), Catch::Contains("resumed: 0.2.0 serves"));
        CHECK(eventually([&] { return !fs::exists(s.state / "update" / "journal.json"); }, std::chrono::seconds(10)));
        CHECK(s.fake.version == "0.2.0");
        CHECK(fs::exists(j.file));
    }
    SECTION("placed but not serving after the restart: rolled back and marked bad") {
        fs::create_directories(s.state / "updates");
        fs::copy_file(fixture("update", "update-echo-v2"), j.file);
        j.step = "published";
        j.save(s.state / "update" / "journal.json");
        s.settings.pins["updemo"] = "0.1.0";  // the loader keeps 0.1.0
        auto m = s.manager();
        m->start();
        CHECK(Setup::has_event(s.events(), CC_EV_UpdateRolledBack));
        CHECK_FALSE(fs::exists(j.file));
        CHECK(m->selection().bad.count("updemo@0.2.0") == 1);
    }
}

TEST_CASE("update manager: modes, pins and refusals through a file:// repository") {
    Setup s;
    SECTION("mode notify reports and defers") {
        s.settings.mode = UpdateSettings::Mode::Notify;
        s.repo.publish_index(1, {{"update-echo-v2", "0.2.0"}}, {&s.k1});
        auto m = s.manager();
        m->start();
        CHECK(eventually([&] { return Setup::has_event(s.events(), CC_EV_UpdateDeferred); }, std::chrono::seconds(10)));
        CHECK(Setup::has_event(s.events(), CC_EV_UpdateAvailable));
        CHECK(s.fake.version == "0.1.0");
        CHECK_THAT(json::serialize(m->command("update status", {})), Catch::Contains("deferred: mode notify"));
    }
    SECTION("a pin holds the version; the configuration's pin wins over `update pin`") {
        s.repo.publish_index(1, {{"update-echo-v2", "0.2.0"}}, {&s.k1});
        auto m = s.manager();
        m->start();
        const json::object pinned = m->command("update pin", {{"name", "updemo"}, {"version", "0.1.0"}});
        CHECK(pinned.at("exit_code").as_int64() == 0);
        m->command("update apply", {});
        CHECK(s.fake.version == "0.1.0");
        CHECK_THAT(json::serialize(m->command("update status", {})), Catch::Contains("pinned to the serving version 0.1.0"));
        CHECK(m->command("update pin", {{"name", "updemo"}, {"version", "latest"}}).at("exit_code").as_int64() == 2);
        s.settings.pins["updemo"] = "0.1.0";
        m->configure(s.settings);
        const json::object released = m->command("update pin", {{"name", "updemo"}, {"version", "none"}});
        CHECK_THAT(json::serialize(released), Catch::Contains("wins"));
        CHECK(m->selection().pins.at("updemo") == "0.1.0");
    }
    SECTION("a tampered file in a file:// repository") {
        s.repo.publish_index(1, {{"update-echo-v2", "0.2.0", "", "", std::string(64, '0')}}, {&s.k1});
        auto m = s.manager();
        m->start();
        m->command("update apply", {});
        CHECK_THAT(s.events(), Catch::Contains("\"reason\":\"tampered_hash\""));
        CHECK(s.fake.version == "0.1.0");
        CHECK(fs::is_empty(s.state / "updates"));
    }
    SECTION("rollout 0% defers scheduled updates, but `update apply` installs") {
        s.settings.mode = UpdateSettings::Mode::Auto;
        s.settings.check_interval = std::chrono::seconds(1);
        s.repo.publish_index(1, {{"update-echo-v2", "0.2.0"}}, {&s.k1});
        // Rewrite the entry with rollout_percent 0 and sign again.
        std::string index = read_file(s.repo.dir / "index.json");
        index.insert(index.rfind("}]"), ",\"rollout_percent\":0");
        write_file(s.repo.dir / "index.json", index);
        write_file(s.repo.dir / "index.json.minisig", sign(s.repo.dir / "index.json", {&s.k1}));
        auto m = s.manager();
        m->start();
        CHECK(eventually([&] { return s.events().find("outside the rollout share") != std::string::npos; },
                         std::chrono::seconds(10)));
        CHECK(s.fake.version == "0.1.0");
        m->command("update apply", {});
        CHECK(s.fake.version == "0.2.0");
    }
}
