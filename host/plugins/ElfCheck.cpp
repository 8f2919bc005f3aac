#include "plugins/ElfCheck.hpp"

#include <elf.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace certconn::host {

namespace {

// A bounds-checked view of a 64-bit little-endian ELF file's section table.
class ElfView {
public:
    explicit ElfView(std::string_view bytes) : b_(bytes) {}

    bool header_ok() const {
        Elf64_Ehdr h{};
        if (!read(0, h)) return false;
        return std::memcmp(h.e_ident, ELFMAG, SELFMAG) == 0 && h.e_ident[EI_CLASS] == ELFCLASS64 &&
               h.e_ident[EI_DATA] == ELFDATA2LSB && h.e_shentsize == sizeof(Elf64_Shdr);
    }
    std::vector<Elf64_Shdr> sections() const {
        Elf64_Ehdr h{};
        std::vector<Elf64_Shdr> out;
        if (!read(0, h)) return out;
        for (std::uint16_t i = 0; i < h.e_shnum; ++i) {
            Elf64_Shdr s{};
            if (!read(h.e_shoff + std::uint64_t{i} * sizeof(Elf64_Shdr), s)) return {};
            out.push_back(s);
        }
        return out;
    }
    template <class T>
    bool read(std::uint64_t offset, T& out) const {
        if (offset > b_.size() || b_.size() - offset < sizeof(T)) return false;
        std::memcpy(&out, b_.data() + offset, sizeof(T));
        return true;
    }
    std::string_view string_at(const Elf64_Shdr& strtab, std::uint32_t index) const {
        if (strtab.sh_offset > b_.size() || index >= strtab.sh_size || b_.size() - strtab.sh_offset < strtab.sh_size) return {};
        const std::string_view table = b_.substr(strtab.sh_offset, strtab.sh_size);
        // Symbol names are short; a name without its NUL in 4 KiB is treated as absent (bounded work).
        const std::string_view window = table.substr(index, 4096);
        const auto end = window.find('\0');
        return end == std::string_view::npos ? std::string_view{} : window.substr(0, end);
    }

private:
    std::string_view b_;
};

}  // namespace

std::vector<std::string> elf_unload_problems(std::string_view bytes) {
    const ElfView elf(bytes);
    if (!elf.header_ok()) return {"not a 64-bit little-endian ELF file"};
    const auto sections = elf.sections();
    std::vector<std::string> problems;
    std::vector<std::string> unique;
    bool thread_dtors = false;
    for (const auto& s : sections) {
        if (s.sh_type == SHT_DYNSYM && s.sh_link < sections.size() && s.sh_entsize == sizeof(Elf64_Sym)) {
            const Elf64_Shdr& strtab = sections[s.sh_link];
            // Bounded work on hostile input: at most 2^20 symbols are looked at.
            const std::uint64_t end = std::min<std::uint64_t>(s.sh_size, (std::uint64_t{1} << 20) * sizeof(Elf64_Sym));
            for (std::uint64_t off = 0; off + sizeof(Elf64_Sym) <= end; off += sizeof(Elf64_Sym)) {
                Elf64_Sym sym{};
                if (!elf.read(s.sh_offset + off, sym)) break;
                const std::string_view name = elf.string_at(strtab, sym.st_name);
                if (ELF64_ST_BIND(sym.st_info) == STB_GNU_UNIQUE && sym.st_shndx != SHN_UNDEF && unique.size() < 3)
                    unique.emplace_back(name);
                if (sym.st_shndx == SHN_UNDEF && (name == "__cxa_thread_atexit_impl" || name == "__cxa_thread_atexit"))
                    thread_dtors = true;
            }
        }
        if (s.sh_type == SHT_DYNAMIC && s.sh_entsize == sizeof(Elf64_Dyn)) {
            for (std::uint64_t off = 0; off + sizeof(Elf64_Dyn) <= s.sh_size; off += sizeof(Elf64_Dyn)) {
                Elf64_Dyn d{};
                if (!elf.read(s.sh_offset + off, d) || d.d_tag == DT_NULL) break;
                if (d.d_tag == DT_FLAGS_1 && (d.d_un.d_val & DF_1_NODELETE) != 0)
                    problems.emplace_back("linked with -z nodelete (DF_1_NODELETE)");
            }
        }
    }
    if (!unique.empty()) {
        std::string names;
        for (const auto& n : unique)
            names += (names.empty() ? "" : ", ") + n;
        problems.push_back("defines STB_GNU_UNIQUE symbols (" + names +
                           "); build with -fno-gnu-unique and hidden visibility (certconn_add_plugin does)");
    }
    if (thread_dtors)
        problems.emplace_back(
            "registers thread_local destructors (__cxa_thread_atexit); the library stays until the "
            "host's threads exit");
    return problems;
}

}  // namespace certconn::host
