#include "eventlog/EventLog.hpp"
#include "support/TestFiles.hpp"

#include <boost/json/parse.hpp>
#include <catch2/catch.hpp>

#include <map>
#include <set>
#include <sstream>
#include <thread>

using namespace certconn::host;
using certconn::test::read_file;
using certconn::test::TempDir;

namespace {
std::vector<boost::json::object> records(const std::filesystem::path& file) {
    std::vector<boost::json::object> out;
    std::istringstream in(read_file(file));
    for (std::string line; std::getline(in, line);)
        out.push_back(boost::json::parse(line).as_object());
    return out;
}
}  // namespace

TEST_CASE("events go to their channel as JSON lines with id, name, category and fields") {
    TempDir dir;
    {
        EventLog log({dir.path(), 1024 * 1024, 3, false, false, false});
        log.emit(CC_EV_PkcsRequestSuccess, CC_LEVEL_INFO, "issued", "req-42", {{"serial", "01AB"}}, "pkcs");
        log.emit(CC_EV_PluginLoaded, CC_LEVEL_INFO, "loaded");
    }
    const auto admin = records(dir / "admin.jsonl");
    REQUIRE(admin.size() == 1);
    CHECK(admin[0].at("id").as_int64() == 1000);
    CHECK(admin[0].at("name").as_string() == "PkcsRequestSuccess");
    CHECK(admin[0].at("channel").as_string() == "Admin");
    CHECK(admin[0].at("category").as_string() == "PKCS");
    CHECK(admin[0].at("level").as_string() == "info");
    CHECK(admin[0].at("request_id").as_string() == "req-42");
    CHECK(admin[0].at("source").as_string() == "pkcs");
    CHECK(admin[0].at("fields").at("serial").as_string() == "01AB");
    CHECK(admin[0].at("time").as_string().size() == 24);  // 2026-11-24T22:30:01.710Z
    const auto operational = records(dir / "operational.jsonl");
    REQUIRE(operational.size() == 1);
    CHECK(operational[0].at("name").as_string() == "PluginLoaded");
}

TEST_CASE("debug events are written only when debug is on for their channel") {
    TempDir dir;
    {
        EventLog log({dir.path(), 1024 * 1024, 3, false, false, false});
        log.emit(CC_EV_PkcsDownloadSuccess, CC_LEVEL_DEBUG, "hidden");
        log.set_debug(CC_CHANNEL_OPERATIONAL, true);
        log.emit(CC_EV_PkcsDownloadSuccess, CC_LEVEL_DEBUG, "shown");
        log.emit(CC_EV_PkcsRequestFailure, CC_LEVEL_DEBUG, "admin stays quiet");
    }
    const auto operational = records(dir / "operational.jsonl");
    REQUIRE(operational.size() == 1);
    CHECK(operational[0].at("message").as_string() == "shown");
    CHECK(records(dir / "admin.jsonl").empty());
}

TEST_CASE("channel files rotate at their size limit and keep the configured number of archives") {
    TempDir dir;
    {
        EventLog log({dir.path(), 4096, 2, false, false, false});
        for (int i = 0; i < 400; ++i)
            log.emit(CC_EV_PluginLoaded, CC_LEVEL_INFO, "line " + std::to_string(i));
    }
    std::set<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(dir.path()))
        names.insert(e.path().filename().string());
    CHECK(names.count("operational.jsonl"));
    CHECK(names.count("operational.1.jsonl"));
    CHECK(names.count("operational.2.jsonl"));
    CHECK_FALSE(names.count("operational.3.jsonl"));
    for (const auto& name : {"operational.jsonl", "operational.1.jsonl", "operational.2.jsonl"})
        CHECK(std::filesystem::file_size(dir / name) <= 4096);
    // The newest record is in the live file, whole.
    const auto live = records(dir / "operational.jsonl");
    REQUIRE_FALSE(live.empty());
    CHECK(live.back().at("message").as_string() == "line 399");
}

TEST_CASE("every event id is unique, in its range, and has a channel and category") {
    std::set<uint32_t> ids;
    for (std::size_t i = 0; i < cc_event_def_count; ++i) {
        const auto& e = cc_event_defs[i];
        INFO(e.name);
        CHECK(ids.insert(e.id).second);
        CHECK(e.id < 6000);
        CHECK(std::string(e.category).size() > 0);
        if (e.id >= 1000) CHECK(std::string(e.name).size() > 4);
    }
    CHECK(cc_event_find(4010)->channel == CC_CHANNEL_OPERATIONAL);
    CHECK(std::string(cc_event_find(4002)->name) == "ScepRequestUploadFailure");
    CHECK(cc_event_find(4242) == nullptr);
}

TEST_CASE("eventlog rate limit: 1000 identical events write the first and one summary counting 999") {
    TempDir dir;
    {
        EventLogOptions options{dir.path(), 1024 * 1024, 3, false, false, false};
        options.suppress_window = std::chrono::hours(1);  // the summary comes from the end of the log
        EventLog log(options);
        for (int i = 0; i < 1000; ++i)
            log.emit(CC_EV_HttpServerError, CC_LEVEL_WARNING, "accept failed: Too many open files");
    }
    const auto operational = records(dir / "operational.jsonl");
    REQUIRE(operational.size() == 2);
    CHECK(operational[0].at("message").as_string() == "accept failed: Too many open files");
    CHECK_FALSE(operational[0].contains("fields"));
    CHECK(operational[1].at("id").as_int64() == CC_EV_HttpServerError);
    CHECK(operational[1].at("level").as_string() == "warning");
    CHECK(operational[1].at("fields").at("suppressed").as_int64() == 999);
    CHECK_THAT(std::string(operational[1].at("message").as_string()),
               Catch::StartsWith("999 similar events suppressed") && Catch::EndsWith("accept failed: Too many open files"));
}

TEST_CASE("eventlog rate limit: different events are not suppressed, interleaved floods are limited each") {
    TempDir dir;
    {
        EventLogOptions options{dir.path(), 1024 * 1024, 3, false, false, false};
        options.suppress_window = std::chrono::hours(1);
        EventLog log(options);
        for (int i = 0; i < 100; ++i)
            log.emit(CC_EV_PluginLoaded, CC_LEVEL_INFO, "line " + std::to_string(i));
        // same message, but another id, level, source, request or fields: each is its own event
        log.emit(CC_EV_PluginUnloaded, CC_LEVEL_INFO, "line 0");
        log.emit(CC_EV_PluginLoaded, CC_LEVEL_WARNING, "line 0");
        log.emit(CC_EV_PluginLoaded, CC_LEVEL_INFO, "line 0", {}, {}, "scep");
        log.emit(CC_EV_PluginLoaded, CC_LEVEL_INFO, "line 0", "req-1");
        log.emit(CC_EV_PluginLoaded, CC_LEVEL_INFO, "line 0", {}, {{"serial", "01"}});
        log.emit(CC_EV_PluginLoaded, CC_LEVEL_INFO, "line 0", {}, {{"serial", "02"}});
        for (int i = 0; i < 50; ++i) {
            log.emit(CC_EV_HttpRequestRejected, CC_LEVEL_WARNING, "a");
            log.emit(CC_EV_HttpRequestRejected, CC_LEVEL_WARNING, "b");
        }
    }
    const auto operational = records(dir / "operational.jsonl");
    REQUIRE(operational.size() == 100 + 6 + 2 + 2);
    for (int i = 0; i < 106; ++i) {
        const bool summary = operational[i].contains("fields") && operational[i].at("fields").as_object().contains("suppressed");
        CHECK_FALSE(summary);
    }
    std::map<std::string, std::int64_t> summaries;
    for (std::size_t i = 108; i < operational.size(); ++i)
        summaries[std::string(operational[i].at("message").as_string())
                      .substr(operational[i].at("message").as_string().size() - 1)] =
            operational[i].at("fields").at("suppressed").as_int64();
    CHECK(summaries == std::map<std::string, std::int64_t>{{"a", 49}, {"b", 49}});
}

TEST_CASE("eventlog rate limit: the summary is written when the window ends, and the event again after it") {
    TempDir dir;
    EventLogOptions options{dir.path(), 1024 * 1024, 3, false, false, false};
    options.suppress_window = std::chrono::milliseconds(200);
    EventLog log(options);
    for (int i = 0; i < 10; ++i)
        log.emit(CC_EV_HttpServerError, CC_LEVEL_WARNING, "flood");
    // No further event arrives: the summary comes from the window's end alone.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (records(dir / "operational.jsonl").size() < 2 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    auto operational = records(dir / "operational.jsonl");
    REQUIRE(operational.size() == 2);
    CHECK(operational[1].at("fields").at("suppressed").as_int64() == 9);
    log.emit(CC_EV_HttpServerError, CC_LEVEL_WARNING, "flood");  // a new window: written
    operational = records(dir / "operational.jsonl");
    REQUIRE(operational.size() == 3);
    CHECK(operational[2].at("message").as_string() == "flood");
}

TEST_CASE("eventlog rate limit: a zero window writes every event") {
    TempDir dir;
    {
        EventLogOptions options{dir.path(), 1024 * 1024, 3, false, false, false};
        options.suppress_window = std::chrono::milliseconds(0);
        EventLog log(options);
        for (int i = 0; i < 20; ++i)
            log.emit(CC_EV_HttpServerError, CC_LEVEL_WARNING, "same");
    }
    CHECK(records(dir / "operational.jsonl").size() == 20);
}
