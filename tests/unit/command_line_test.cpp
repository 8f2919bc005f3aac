#include "cli/CommandLine.hpp"

#include <catch2/catch.hpp>

using namespace certconn::host;

TEST_CASE("options: values, inline values and flags") {
    const std::vector<OptionSpec> specs = {{"config", true, ""}, {"json", false, ""}};
    auto o = parse_options({"--config", "a.toml", "--json"}, specs, "plugins");
    CHECK(o.value("config") == "a.toml");
    CHECK(o.has("json"));
    CHECK(parse_options({"--config=b.toml"}, specs, "plugins").value("config") == "b.toml");
}

TEST_CASE("options: unknown, missing values and stray words are errors naming them") {
    const std::vector<OptionSpec> specs = {{"config", true, ""}, {"json", false, ""}};
    CHECK_THROWS_WITH(parse_options({"--confg", "x"}, specs, "status"), Catch::Contains("unknown option --confg for 'status'"));
    CHECK_THROWS_WITH(parse_options({"--config"}, specs, "status"), Catch::Contains("--config needs a value"));
    CHECK_THROWS_WITH(parse_options({"--json=yes"}, specs, "status"), Catch::Contains("--json takes no value"));
    CHECK_THROWS_WITH(parse_options({"extra"}, specs, "status"), Catch::Contains("unexpected argument 'extra'"));
}
