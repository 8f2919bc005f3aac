// The loader against real plugin files: good fixtures and deliberately broken ones.
#include "plugins/ModuleStore.hpp"
#include "plugins/PluginLoader.hpp"
#include "support/TestFiles.hpp"

#include <certconn/events.h>

#include <catch2/catch.hpp>

using namespace certconn::host;
using namespace certconn::test;

namespace {

const PluginFileReport& report_for(const PluginScan& scan, const std::string& file) {
    for (const auto& r : scan.files)
        if (r.file.filename() == file) return r;
    FAIL("no report for " << file);
    throw std::logic_error("unreachable");
}

LoaderPolicy policy() {
    return LoaderPolicy::for_service_account("");
}

}  // namespace

TEST_CASE("a broken plugin among good ones is refused with its own reason - the good ones load") {
    TempDir dir;
    for (const char* good : {"fixture-echo", "fixture-ca", "fixture-tenant", "fixture-c-echo"})
        install_fixture(dir.path(), "good", good);
    for (const char* bad : {"broken-abi-major", "broken-abi-minor", "broken-no-init", "broken-bad-name", "broken-bad-schema"})
        install_fixture(dir.path(), "broken", bad);
    install_fixture(dir.path(), "broken", "broken-duplicate", "zz-duplicate.so");
    write_file(dir / "garbage.so", "this is not an ELF file");
    ::chmod((dir / "garbage.so").c_str(), 0644);
    install_fixture(dir.path(), "good", "fixture-c-echo", "world-writable.so");
    ::chmod((dir / "world-writable.so").c_str(), 0666);
    install_fixture(dir.path(), "good", "fixture-c-echo", "group-writable.so");
    ::chmod((dir / "group-writable.so").c_str(), 0664);

    const PluginScan scan = scan_plugins(dir.path(), policy());
    REQUIRE_FALSE(scan.directory_problem);
    CHECK(scan.files.size() == 13);

    std::vector<std::string> loaded;
    for (const auto& lib : scan.libraries)
        loaded.push_back(std::string(kind_name(lib->identity.kind)) + ":" + lib->identity.name);
    std::sort(loaded.begin(), loaded.end());
    CHECK(loaded == std::vector<std::string>{"ca:fixture", "feature:c-echo", "feature:echo", "tenant:fixture"});

    const auto& major = report_for(scan, "broken-abi-major.so");
    CHECK(major.event_id == CC_EV_PluginAbiMismatch);
    CHECK(major.reason == "plugin 'broken-abi-major' (" + (dir / "broken-abi-major.so").string() +
                              "): built for SDK 2.1, this host speaks 1.0-1." + std::to_string(CERTCONN_ABI_MINOR));

    const auto& minor = report_for(scan, "broken-abi-minor.so");
    CHECK(minor.event_id == CC_EV_PluginAbiMismatch);
    CHECK_THAT(minor.reason, Catch::EndsWith("built for SDK 1." + std::to_string(CERTCONN_ABI_MINOR + 1) +
                                             ", this host speaks 1.0-1." + std::to_string(CERTCONN_ABI_MINOR)));

    const auto& no_init = report_for(scan, "broken-no-init.so");
    CHECK(no_init.event_id == CC_EV_PluginExportMissing);
    CHECK_THAT(no_init.reason, Catch::Contains("missing export 'certconn_plugin_init'"));

    const auto& name = report_for(scan, "broken-bad-name.so");
    CHECK(name.event_id == CC_EV_PluginInfoInvalid);
    CHECK_THAT(name.reason, Catch::Contains("invalid name 'Bad Name'; expected [a-z][a-z0-9-]{0,62}"));

    const auto& schema = report_for(scan, "broken-bad-schema.so");
    CHECK(schema.event_id == CC_EV_PluginInfoInvalid);
    CHECK_THAT(schema.reason, Catch::Contains("invalid config_schema: schema.type: unknown type 'tabel'"));

    // Another "echo", older than fixture-echo's 1.2.0: superseded (same versions: the test below).
    const auto& dup = report_for(scan, "zz-duplicate.so");
    CHECK(dup.event_id == CC_EV_PluginSuperseded);
    CHECK(dup.superseded);
    CHECK_THAT(dup.reason, Catch::Contains("version 1.0.0 superseded by 1.2.0 (" + (dir / "fixture-echo.so").string() + ")"));

    const auto& garbage = report_for(scan, "garbage.so");
    CHECK(garbage.event_id == CC_EV_PluginLoadFailed);
    CHECK_THAT(garbage.reason, Catch::Contains("cannot be loaded: ") && Catch::Contains("garbage.so"));

    const auto& ww = report_for(scan, "world-writable.so");
    CHECK(ww.event_id == CC_EV_PluginFileUnsafe);
    CHECK_THAT(ww.reason, Catch::Contains("writable by everyone (mode 0666)"));
    const auto& gw = report_for(scan, "group-writable.so");
    CHECK(gw.event_id == CC_EV_PluginFileUnsafe);
    CHECK_THAT(gw.reason, Catch::Contains("writable by its group (mode 0664)"));
}

TEST_CASE("the identity comes from the query export without running init") {
    TempDir dir;
    install_fixture(dir.path(), "good", "fixture-ca");
    install_fixture(dir.path(), "broken", "broken-init-throws");
    const PluginScan scan = scan_plugins(dir.path(), policy());
    REQUIRE(scan.libraries.size() == 2);  // a throwing init is only found when it runs
    const auto& ca = *scan.libraries[1];
    CHECK(ca.identity.kind == CC_KIND_CA);
    CHECK(ca.identity.name == "fixture");
    CHECK(ca.identity.version == "0.3.0");
    CHECK(ca.identity.release_date == "2026-11-01");
    CHECK(ca.identity.abi_major == CERTCONN_ABI_MAJOR);
    REQUIRE(ca.identity.schema);
    CHECK(ca.identity.schema->keys.at("label").required);
}

TEST_CASE("a plugin directory writable by others is refused as a whole") {
    TempDir dir;
    install_fixture(dir.path(), "good", "fixture-echo");
    ::chmod(dir.path().c_str(), 0777);
    const PluginScan scan = scan_plugins(dir.path(), policy());
    REQUIRE(scan.directory_problem);
    CHECK_THAT(*scan.directory_problem,
               Catch::Contains("is writable by everyone (mode 0777)") && Catch::Contains("no plugin loaded from it"));
    CHECK(scan.libraries.empty());
    ::chmod(dir.path().c_str(), 0755);
}

TEST_CASE("a missing plugin directory is reported") {
    const PluginScan scan = scan_plugins("/nonexistent/certconnector/plugins", policy());
    REQUIRE(scan.directory_problem);
    CHECK_THAT(*scan.directory_problem, Catch::Contains("does not exist"));
}

TEST_CASE("files owned by an untrusted user are refused") {
    TempDir dir;
    const auto file = install_fixture(dir.path(), "good", "fixture-echo");
    LoaderPolicy strict;
    strict.trusted_owners = {12345};  // nobody we are
    PluginFileReport report;
    CHECK_FALSE(open_plugin(file, strict, report));
    CHECK(report.event_id == CC_EV_PluginFileUnsafe);
    CHECK_THAT(report.reason,
               Catch::Contains("owned by uid") && Catch::Contains("expected root, the running user or the service account"));
}

TEST_CASE(
    "every directory above the plugin directory is checked: group- or world-writable refuses it unless root-owned and sticky") {
    TempDir root;  // under the build tree: its ancestors are safe (not /tmp)
    const auto above = root / "opt";
    const auto plugins = above / "certconnector" / "plugins";
    std::filesystem::create_directories(plugins);
    for (const auto& d : {above, above / "certconnector", plugins})
        ::chmod(d.c_str(), 0755);
    install_fixture(plugins, "good", "fixture-echo");
    REQUIRE(scan_plugins(plugins, policy()).libraries.size() == 1);
    CHECK(ancestor_problem(plugins, policy()).empty());

    struct Case {
        mode_t mode;
        const char* why;
    };
    for (const Case& c : {Case{0775, "(owner root (uid 0), mode 0775) is writable by its group"},
                          Case{0777, "(owner root (uid 0), mode 0777) is writable by everyone"}}) {
        ::chmod(above.c_str(), c.mode);
        const PluginScan scan = scan_plugins(plugins, policy());
        INFO(scan.directory_problem.value_or("(none)"));
        REQUIRE(scan.directory_problem);
        CHECK_THAT(*scan.directory_problem, Catch::Contains("ancestor directory " + above.string() + " " + c.why) &&
                                                Catch::Contains("no plugin loaded from it"));
        CHECK(scan.libraries.empty());
        // The file on its own is refused too (event 103), naming the same directory.
        PluginFileReport report;
        CHECK_FALSE(open_plugin(plugins / "fixture-echo.so", policy(), report));
        CHECK(report.event_id == CC_EV_PluginFileUnsafe);
        CHECK_THAT(report.reason, Catch::Contains("ancestor directory " + above.string()));
    }
    // Root-owned and sticky (as /tmp): nobody else can rename or remove what lies below.
    ::chmod(above.c_str(), 01777);
    CHECK(ancestor_problem(plugins, policy()).empty());
    CHECK(scan_plugins(plugins, policy()).libraries.size() == 1);
    // Sticky but owned by someone else: that owner can swap the entries.
    REQUIRE(::chown(above.c_str(), 12345, 0) == 0);
    CHECK_THAT(
        ancestor_problem(plugins, policy()),
        Catch::Contains(
            "(owner uid 12345, mode 1777) is writable by everyone (sticky, but only a root-owned sticky directory is safe)"));
    REQUIRE(::chown(above.c_str(), 0, 0) == 0);
    ::chmod(above.c_str(), 0755);

    // An ancestor with an untrusted owner.
    REQUIRE(::chown(above.c_str(), 12345, 0) == 0);
    const PluginScan foreign = scan_plugins(plugins, policy());
    REQUIRE(foreign.directory_problem);
    CHECK_THAT(*foreign.directory_problem,
               Catch::Contains("ancestor directory " + above.string() + " (owner uid 12345, mode 0755) has an untrusted owner"));
    REQUIRE(::chown(above.c_str(), 0, 0) == 0);
    CHECK(scan_plugins(plugins, policy()).libraries.size() == 1);
}

TEST_CASE("symlinks are resolved: a plugin file or directory that really lives below a writable directory is refused") {
    TempDir root;
    const auto safe = root / "safe";
    const auto open_dir = root / "open";  // the real home of the linked files: world-writable
    std::filesystem::create_directories(safe / "plugins");
    std::filesystem::create_directories(open_dir / "real-plugins");
    ::chmod(safe.c_str(), 0755);
    ::chmod((safe / "plugins").c_str(), 0755);
    ::chmod((open_dir / "real-plugins").c_str(), 0755);
    ::chmod(open_dir.c_str(), 0777);
    const auto target = install_fixture(open_dir / "real-plugins", "good", "fixture-echo");

    // A file symlink in a safe directory.
    std::filesystem::create_symlink(target, safe / "plugins" / "linked.so");
    const PluginScan scan = scan_plugins(safe / "plugins", policy());
    REQUIRE_FALSE(scan.directory_problem);
    const auto& linked = report_for(scan, "linked.so");
    CHECK_FALSE(linked.accepted);
    CHECK(linked.event_id == CC_EV_PluginFileUnsafe);
    CHECK_THAT(linked.reason, Catch::Contains("ancestor directory " + open_dir.string() + " (owner root (uid 0), mode 0777)"));

    // A directory symlink.
    std::filesystem::create_symlink(open_dir / "real-plugins", safe / "plugins-link");
    const PluginScan dir_scan = scan_plugins(safe / "plugins-link", policy());
    REQUIRE(dir_scan.directory_problem);
    CHECK_THAT(*dir_scan.directory_problem, Catch::Contains("ancestor directory " + open_dir.string()));

    ::chmod(open_dir.c_str(), 0755);
    CHECK(scan_plugins(safe / "plugins-link", policy()).libraries.size() == 1);
}

TEST_CASE("/tmp, root-owned with the sticky bit, is an acceptable ancestor - what lies below it is checked") {
    std::string pattern = "/tmp/certconn-loader-XXXXXX";
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    ::chmod(pattern.c_str(), 0755);
    struct stat st {};
    REQUIRE(::stat("/tmp", &st) == 0);
    if ((st.st_mode & 01002) != 01002) {
        ::rmdir(pattern.c_str());
        WARN("/tmp is not sticky and world-writable here; nothing to show");
        return;
    }
    const std::string below = pattern + "/plugins";
    ::mkdir(below.c_str(), 0755);
    const std::string safe = ancestor_problem(below, policy());
    ::chmod(pattern.c_str(), 0777);  // the directory under /tmp is what must not be writable
    const std::string open = ancestor_problem(below, policy());
    ::rmdir(below.c_str());
    ::rmdir(pattern.c_str());
    CHECK(safe.empty());
    CHECK_THAT(open,
               Catch::StartsWith("ancestor directory " + pattern + " (owner root (uid 0), mode 0777) is writable by everyone"));
}

TEST_CASE("several versions of a plugin: the highest serves, the others are superseded, pins and bad marks choose") {
    TempDir dir;
    install_fixture(dir.path(), "swap", "swap-0.1.0");
    install_fixture(dir.path(), "swap", "swap-0.2.0");
    auto served = [&](const ScanOptions& options) {
        const PluginScan scan = scan_plugins(dir.path(), policy(), options);
        REQUIRE(scan.libraries.size() == 1);
        return scan.libraries.front()->identity.version;
    };
    {
        // The older file sorts first by name; the newer version still serves.
        const PluginScan scan = scan_plugins(dir.path(), policy());
        REQUIRE(scan.libraries.size() == 1);
        CHECK(scan.libraries.front()->identity.version == "0.2.0");
        const auto& old = report_for(scan, "swap-0.1.0.so");
        CHECK(old.superseded);
        CHECK_FALSE(old.accepted);
        CHECK(old.event_id == CC_EV_PluginSuperseded);
        CHECK_THAT(old.reason, Catch::Contains("version 0.1.0 superseded by 0.2.0"));
    }
    {
        // Two files of the same version: the first found serves, the second is a duplicate.
        TempDir twice;
        install_fixture(twice.path(), "swap", "swap-0.2.0", "a.so");
        install_fixture(twice.path(), "swap", "swap-0.2.0", "b.so");
        const PluginScan scan = scan_plugins(twice.path(), policy());
        REQUIRE(scan.libraries.size() == 1);
        CHECK(report_for(scan, "b.so").event_id == CC_EV_PluginDuplicate);
        CHECK_THAT(report_for(scan, "b.so").reason,
                   Catch::Contains("a feature plugin named 'swap' 0.2.0 is already loaded from " + (twice / "a.so").string()));
    }
    ScanOptions pinned;
    pinned.selection.pins["swap"] = "0.1.0";
    CHECK(served(pinned) == "0.1.0");
    ScanOptions bad;
    bad.selection.bad.insert(VersionSelection::key("swap", "0.2.0"));
    CHECK(served(bad) == "0.1.0");
    bad.selection.bad.insert(VersionSelection::key("swap", "0.1.0"));
    CHECK(served(bad) == "0.2.0");  // everything is marked bad: the best of them still serves

    ScanOptions missing;
    missing.selection.pins["swap"] = "9.9.9";
    const PluginScan none = scan_plugins(dir.path(), policy(), missing);
    CHECK(none.libraries.empty());
    CHECK(none.held.count({CC_KIND_FEATURE, "swap"}) == 1);  // what serves it keeps serving
    CHECK_THAT(report_for(none, "swap-0.2.0.so").reason, Catch::Contains("not the pinned version 9.9.9"));
}

TEST_CASE("the unload check finds GNU unique symbols and nothing in a plugin built by certconn_add_plugin") {
    CHECK(unload_problems(fixture("swap", "swap-0.1.0")).empty());
    const auto unique = unload_problems(fixture("swap", "swap-0.4.0-unique"));
    REQUIRE(unique.size() == 1);
    CHECK_THAT(unique.front(), Catch::Contains("STB_GNU_UNIQUE"));
    TempDir dir;
    write_file(dir / "garbage.so", "not an ELF file at all");
    CHECK_THAT(unload_problems(dir / "garbage.so").front(), Catch::Contains("not a 64-bit"));
}
