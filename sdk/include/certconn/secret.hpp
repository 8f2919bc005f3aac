// certconn/secret.hpp — secret bytes (passwords, PINs, key material) that are wiped when no
// longer needed, and a constant-time comparison. Header-only; needs only the C library, so a
// plugin that does not link OpenSSL can use it too.
//
// A Secret cannot be copied, printed or converted to a string by accident: the bytes are read
// only through an explicit reveal(), so every place a secret leaves its box is greppable.
#pragma once

#include <cstddef>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

#include <string.h>  // explicit_bzero (glibc >= 2.25)

namespace certconn::sdk {

/// Overwrites `size` bytes at `data` with zeros in a way the compiler may not remove.
inline void wipe(void* data, std::size_t size) noexcept {
    if (data != nullptr && size != 0) ::explicit_bzero(data, size);
}

/// True when `a` and `b` hold the same bytes. The time taken depends on the lengths only, never
/// on where the first difference is: use it for tokens, MACs and challenges.
inline bool constant_time_equals(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) return false;
    // volatile reads: the loop always runs to the end and is not turned into an early-exit memcmp.
    const volatile unsigned char* pa = reinterpret_cast<const unsigned char*>(a.data());
    const volatile unsigned char* pb = reinterpret_cast<const unsigned char*>(b.data());
    unsigned char diff = 0;
    for (std::size_t i = 0; i < a.size(); ++i)
        diff = static_cast<unsigned char>(diff | (pa[i] ^ pb[i]));
    return diff == 0;
}

class Secret {
public:
    Secret() noexcept = default;
    /// Copies `bytes`; the caller remains responsible for its own copy.
    explicit Secret(std::string_view bytes) { assign(bytes.data(), bytes.size()); }
    explicit Secret(const char* text) : Secret(std::string_view(text ? text : "")) {}
    /// Takes `bytes` and wipes the string it came from (its characters are zeroed, then cleared).
    explicit Secret(std::string&& bytes) {
        assign(bytes.data(), bytes.size());
        wipe(bytes.data(), bytes.size());
        bytes.clear();
    }
    Secret(const Secret&) = delete;
    Secret& operator=(const Secret&) = delete;
    /// The moved-from Secret is left empty; its bytes now belong to this one.
    Secret(Secret&& other) noexcept : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
    Secret& operator=(Secret&& other) noexcept {
        if (this != &other) {
            clear();
            data_ = std::exchange(other.data_, nullptr);
            size_ = std::exchange(other.size_, 0);
        }
        return *this;
    }
    ~Secret() { clear(); }

    /// A deliberate copy.
    Secret clone() const { return Secret(reveal()); }

    /// The bytes. The view is valid while this Secret lives and is not assigned; `data()` is
    /// followed by a NUL, so it may be passed where a C string is expected.
    std::string_view reveal() const noexcept { return data_ ? std::string_view(data_, size_) : std::string_view(""); }
    /// reveal().data() as a NUL-terminated C string (for OpenSSL and PKCS#11 calls).
    const char* reveal_c_str() const noexcept { return data_ ? data_ : ""; }

    std::size_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }

    /// Constant-time comparison (the lengths may leak, the contents do not).
    bool equals(const Secret& other) const noexcept { return constant_time_equals(reveal(), other.reveal()); }
    bool equals(std::string_view other) const noexcept { return constant_time_equals(reveal(), other); }

    /// Wipes and frees the bytes; the Secret is empty afterwards.
    void clear() noexcept {
        if (data_) {
            wipe(data_, size_ + 1);
            delete[] data_;
        }
        data_ = nullptr;
        size_ = 0;
    }

    // Never printed, never compared by ==: a Secret has no stream operator and no implicit
    // conversions (a deleted template catches every stream type, with a clear diagnostic).
    template <class Stream>
    friend Stream& operator<<(Stream&, const Secret&) = delete;
    friend bool operator==(const Secret&, const Secret&) = delete;

private:
    void assign(const char* bytes, std::size_t size) {
        char* fresh = new char[size + 1];
        if (size != 0) std::memcpy(fresh, bytes, size);
        fresh[size] = '\0';
        clear();
        data_ = fresh;
        size_ = size;
    }

    char* data_ = nullptr;  // size_ bytes and a NUL, owned; null when empty
    std::size_t size_ = 0;
};

}  // namespace certconn::sdk
