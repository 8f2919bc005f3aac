#include "eventlog/EventLog.hpp"
#include "support/TestFiles.hpp"

#include <boost/json/parse.hpp>
#include <catch2/catch.hpp>

#include <set>
#include <sstream>

using namespace certconn::host;
using certconn::test::TempDir;
using certconn::test::read_file;

namespace {
std::vector<boost::json::object> records(const std::filesystem::path& file) {
    std::vector<boost::json::object> out;
    std::istringstream in(read_file(file));
    for (std::string line; std::getline(in, line);) out.push_back(boost::json::parse(line).as_object());
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
        for (int i = 0; i < 400; ++i) log.emit(CC_EV_PluginLoaded, CC_LEVEL_INFO, "line " + std::to_string(i));
    }
    std::set<std::string> names;
    for (const auto& e : std::filesystem::directory_iterator(dir.path())) names.insert(e.path().filename().string());
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
