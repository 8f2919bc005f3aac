#include "plugins/ModuleStore.hpp"

#include "auth/AccessPolicy.hpp"

#include <certconn/crypto.hpp>
#include <certconn/errno_message.hpp>

#include <elf.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string_view>

namespace certconn::host {

namespace fs = std::filesystem;

namespace {

constexpr std::uintmax_t kMaxModuleBytes = std::uintmax_t{256} * 1024 * 1024;

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

std::string read_bounded(const fs::path& file) {
    std::error_code ec;
    const auto size = fs::file_size(file, ec);
    if (ec) throw std::runtime_error("cannot read " + file.string() + ": " + ec.message());
    if (size > kMaxModuleBytes)
        throw std::runtime_error(file.string() + " is " + std::to_string(size) + " bytes; a plugin may have at most " +
                                 std::to_string(kMaxModuleBytes));
    return crypto::read_file(file, "plugin file");
}

}  // namespace

std::vector<std::string> unload_problems(const fs::path& file) {
    try {
        return elf_unload_problems(read_bounded(file));
    } catch (const std::exception& e) {
        return {e.what()};
    }
}

bool is_mapped(const fs::path& file) {
    struct stat st {};
    const bool exists = ::stat(file.c_str(), &st) == 0;
    std::ifstream maps("/proc/self/maps");
    std::string line;
    // "start-end perms offset dev(major:minor hex) inode path"
    while (std::getline(maps, line)) {
        std::istringstream fields(line);
        std::string range, perms, offset, dev, inode_text;
        if (!(fields >> range >> perms >> offset >> dev >> inode_text)) continue;
        const auto colon = dev.find(':');
        if (colon == std::string::npos) continue;
        const unsigned long major = std::strtoul(dev.substr(0, colon).c_str(), nullptr, 16);
        const unsigned long minor = std::strtoul(dev.substr(colon + 1).c_str(), nullptr, 16);
        const unsigned long long inode = std::strtoull(inode_text.c_str(), nullptr, 10);
        if (exists && inode == st.st_ino && major == ::major(st.st_dev) && minor == ::minor(st.st_dev)) return true;
        // By path too: module paths are unique, and on overlayfs maps shows another device and
        // inode than stat(); a removed file still mapped shows as "<path> (deleted)".
        const auto at = line.find(file.string());
        if (at != std::string::npos && line.find('/') == at &&
            (line.size() == at + file.string().size() || line.compare(at + file.string().size(), 10, " (deleted)") == 0))
            return true;
    }
    return false;
}

ModuleStore::ModuleStore(fs::path directory) : directory_(std::move(directory)) {
    std::error_code ec;
    fs::create_directories(directory_ / ".incoming", ec);
    if (ec) throw std::runtime_error("cannot create the module store " + directory_.string() + ": " + ec.message());
    ::chmod(directory_.c_str(), 0700);
    ::chmod((directory_ / ".incoming").c_str(), 0700);
}

ModuleStore::Staged ModuleStore::stage(const fs::path& source) const {
    const std::string bytes = read_bounded(source);
    const std::string sha = sha256_hex(bytes);
    Staged staged{directory_ / ".incoming" / (sha + ".so"), sha};
    std::error_code ec;
    if (!fs::exists(staged.path, ec)) {
        fs::remove(staged.path.string() + ".tmp", ec);  // left by a crash mid-write (0400: not reopenable)
        crypto::write_file_atomic(staged.path, bytes, 0400);
    }
    return staged;
}

fs::path ModuleStore::place(const Staged& staged, const PluginIdentity& id) const {
    const fs::path dir = directory_ / (std::string(kind_name(id.kind)) + "-" + id.name);
    fs::path target = dir / (id.version + "-" + staged.sha256.substr(0, 12) + ".so");
    std::error_code ec;
    fs::create_directories(dir, ec);
    ::chmod(dir.c_str(), 0700);
    if (fs::exists(target, ec)) {
        // Same name, so the same leading hash: compare the whole hash before trusting it.
        if (sha256_hex(read_bounded(target)) != staged.sha256)
            throw std::runtime_error(target.string() + " exists with other bytes (a 48-bit hash prefix collision); refused");
        fs::remove(staged.path, ec);
        return target;
    }
    fs::rename(staged.path, target, ec);
    if (ec) throw std::runtime_error("cannot move " + staged.path.string() + " to " + target.string() + ": " + ec.message());
    return target;
}

void ModuleStore::collect(const std::set<fs::path>& keep) const {
    std::error_code ec;
    for (const auto& entry : fs::recursive_directory_iterator(directory_, ec)) {
        if (!entry.is_regular_file(ec) || entry.path().extension() != ".so") continue;
        if (keep.count(entry.path()) || is_mapped(entry.path())) continue;
        fs::remove(entry.path(), ec);
    }
}

}  // namespace certconn::host
