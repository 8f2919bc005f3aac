// Every event id of the product's table (events.h) is written somewhere: an id no code emits is
// a situation the operator is told about in the docs but never sees in the log.
#include <certconn/events.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace fs = std::filesystem;

TEST_CASE("every event id in events.h is emitted by the host, the SDK or a shipped plugin") {
    std::string code;
    for (const char* dir : {"host", "plugins", "sdk/include/certconn/sdk.hpp"}) {
        const fs::path root = fs::path(SOURCE_DIR) / dir;
        auto add = [&](const fs::path& file) {
            if (file.extension() != ".cpp" && file.extension() != ".hpp") return;
            std::ifstream in(file);
            code.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
        };
        if (fs::is_regular_file(root)) {
            add(root);
            continue;
        }
        for (const auto& entry : fs::recursive_directory_iterator(root))
            if (entry.is_regular_file()) add(entry.path());
    }
    REQUIRE(code.size() > 100000);  // the tree was found
    for (size_t i = 0; i < cc_event_def_count; ++i) {
        const std::string name = std::string("CC_EV_") + cc_event_defs[i].name;
        INFO(cc_event_defs[i].id << " " << name << " (" << cc_event_defs[i].meaning << ")");
        CHECK(code.find(name) != std::string::npos);
    }
}
