// What keeps a plugin library mapped after dlclose, read from its ELF file (bounded: the bytes
// may come from anyone who could write a plugin file; fuzzed by tests/fuzz/elf_check_fuzzer.cpp).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace certconn::host {

/// STB_GNU_UNIQUE symbols it defines, DF_1_NODELETE, thread_local destructors it registers
/// (__cxa_thread_atexit); one problem naming the format when the bytes are not a 64-bit
/// little-endian ELF file. Empty when dlclose can unmap it.
std::vector<std::string> elf_unload_problems(std::string_view bytes);

}  // namespace certconn::host
