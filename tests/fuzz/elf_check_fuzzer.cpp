// libFuzzer target: the ELF reader that decides whether a plugin file can be unloaded
// (host/plugins/ElfCheck.cpp). Its input is any file someone placed as a plugin.
// Build and run: scripts/fuzz elf-check [seconds]. Any crash, hang or sanitizer report is a bug.
#include "plugins/ElfCheck.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto problems = certconn::host::elf_unload_problems(std::string_view(reinterpret_cast<const char*>(data), size));
    if (size < 64 && problems.empty()) __builtin_trap();  // too short for an ELF header: must say so
    return 0;
}
