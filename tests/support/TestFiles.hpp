// Test helpers: private temporary directories and copies of fixture plugins.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <stdexcept>
#include <string>

namespace certconn::test {

/// Where TempDir makes its directories: CERTCONN_TEST_TMP_DIR (a 0755 directory in the build
/// tree) when the build defines it. Not /tmp: the plugin loader refuses plugin directories with
/// a group- or world-writable ancestor, and /tmp is world-writable (sticky or not).
inline std::filesystem::path temp_base() {
#ifdef CERTCONN_TEST_TMP_DIR
    const std::filesystem::path base(CERTCONN_TEST_TMP_DIR);
    std::error_code ec;
    if (std::filesystem::create_directories(base, ec)) ::chmod(base.c_str(), 0755);
    return base;
#else
    return std::filesystem::temp_directory_path();
#endif
}

/// A fresh directory (mode 0755) removed with everything in it at the end of the test.
class TempDir {
public:
    TempDir() {
        std::string pattern = (temp_base() / "certconn-test-XXXXXX").string();
        if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
        path_ = pattern;
        ::chmod(path_.c_str(), 0755);
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    const std::filesystem::path& path() const { return path_; }
    std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

private:
    std::filesystem::path path_;
};

inline std::filesystem::path fixture(const std::string& group, const std::string& name) {
    return std::filesystem::path(FIXTURE_DIR) / group / (name + ".so");
}

/// Copies fixture `group/name.so` into `dir` as `as` (default: same name), mode 0755.
inline std::filesystem::path install_fixture(const std::filesystem::path& dir, const std::string& group, const std::string& name,
                                             std::string as = {}) {
    if (as.empty()) as = name + ".so";
    const auto target = dir / as;
    std::filesystem::copy_file(fixture(group, name), target, std::filesystem::copy_options::overwrite_existing);
    ::chmod(target.c_str(), 0755);
    return target;
}

#ifdef CERTCONN_PLUGIN_DIR
/// Creates `dir` (mode 0755) holding copies of the shipped plugins `names` from the build tree.
inline void install_plugins(const std::filesystem::path& dir, std::initializer_list<const char*> names) {
    std::filesystem::create_directories(dir);
    ::chmod(dir.c_str(), 0755);
    for (const char* name : names) {
        const auto target = dir / (std::string(name) + ".so");
        std::filesystem::copy_file(std::filesystem::path(CERTCONN_PLUGIN_DIR) / (std::string(name) + ".so"), target,
                                   std::filesystem::copy_options::overwrite_existing);
        ::chmod(target.c_str(), 0755);
    }
}
#endif

inline void write_file(const std::filesystem::path& file, const std::string& text) {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out << text;
}

inline std::string read_file(const std::filesystem::path& file) {
    std::ifstream in(file, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace certconn::test
