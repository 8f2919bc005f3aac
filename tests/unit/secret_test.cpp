// certconn/secret.hpp: a Secret cannot leak by accident (no copy, no string conversion, no
// stream operator), wipes the string it takes, and compares in constant time.
#include <certconn/secret.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <sstream>
#include <string>
#include <type_traits>

using certconn::sdk::constant_time_equals;
using certconn::sdk::Secret;

namespace {

template <class T, class = void>
struct streamable : std::false_type {};
template <class T>
struct streamable<T, std::void_t<decltype(std::declval<std::ostream&>() << std::declval<const T&>())>> : std::true_type {};

}  // namespace

// What must not compile, checked at compile time.
static_assert(!std::is_convertible_v<Secret, std::string>);
static_assert(!std::is_convertible_v<Secret, std::string_view>);
static_assert(!std::is_convertible_v<std::string, Secret>);  // explicit only: a secret is always named as one
static_assert(!std::is_copy_constructible_v<Secret> && !std::is_copy_assignable_v<Secret>);
static_assert(std::is_nothrow_move_constructible_v<Secret> && std::is_nothrow_move_assignable_v<Secret>);
static_assert(!streamable<Secret>::value, "a Secret must not be printable");
static_assert(streamable<std::string>::value, "the detector itself works");

TEST_CASE("constant_time_equals: equal, unequal, different lengths, empty") {
    CHECK(constant_time_equals("token-abc", "token-abc"));
    CHECK_FALSE(constant_time_equals("token-abc", "token-abd"));  // last byte differs
    CHECK_FALSE(constant_time_equals("xoken-abc", "token-abc"));  // first byte differs
    CHECK_FALSE(constant_time_equals("token-abc", "token-ab"));   // a prefix is not equal
    CHECK_FALSE(constant_time_equals("token", "token-abc"));
    CHECK(constant_time_equals("", ""));
    CHECK_FALSE(constant_time_equals("", "x"));
    CHECK_FALSE(constant_time_equals("x", ""));
    const std::string with_nul("a\0b", 3), other_nul("a\0c", 3);
    CHECK(constant_time_equals(with_nul, std::string("a\0b", 3)));
    CHECK_FALSE(constant_time_equals(with_nul, other_nul));  // bytes after a NUL count
}

TEST_CASE("a Secret reveals its bytes only when asked, compares in constant time and wipes what it takes") {
    const Secret pin(std::string_view("1234"));
    CHECK(pin.reveal() == "1234");
    CHECK(std::string(pin.reveal_c_str()) == "1234");  // NUL-terminated for C APIs
    CHECK(pin.size() == 4);
    CHECK(pin.equals(std::string_view("1234")));
    CHECK_FALSE(pin.equals(std::string_view("1235")));
    CHECK(pin.equals(Secret(std::string_view("1234"))));
    CHECK_FALSE(pin.equals(Secret(std::string_view("12345"))));

    // Taking a std::string wipes the caller's copy (a long one, so it lives on the heap).
    std::string password(64, 'p');
    const char* old = password.data();
    const std::size_t capacity = password.capacity();
    Secret taken(std::move(password));
    CHECK(taken.reveal() == std::string(64, 'p'));
    CHECK(password.empty());
    REQUIRE(password.data() == old);  // cleared in place, buffer kept: its bytes can be inspected
    CHECK(std::all_of(old, old + std::min<std::size_t>(64, capacity), [](char c) { return c == '\0'; }));

    // Moving leaves the source empty; clear() empties.
    Secret moved(std::move(taken));
    CHECK(moved.size() == 64);
    CHECK(taken.empty());  // NOLINT(bugprone-use-after-move): documented state
    CHECK(taken.reveal().empty());
    CHECK(std::string(taken.reveal_c_str()).empty());
    Secret assigned;
    assigned = std::move(moved);
    CHECK(assigned.size() == 64);
    CHECK(moved.empty());  // NOLINT(bugprone-use-after-move)
    const Secret copy = assigned.clone();
    CHECK(copy.equals(assigned));
    assigned.clear();
    CHECK(assigned.empty());
    CHECK(copy.size() == 64);

    const Secret none;
    CHECK(none.empty());
    CHECK(none.reveal().empty());
    CHECK(none.equals(std::string_view("")));
}
