// certconn/backoff.hpp: the one retry delay policy of this code base: exponential, capped,
// with optional jitter. Header-only C++ helper for the host and plugins; no C ABI involved.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <random>

namespace certconn::sdk {

/// Delay before retry number `attempt` (1 = the first retry): `initial * 2^(attempt-1)`, capped
/// at `max`, then multiplied by a random factor in [1 - jitter_fraction, 1 + jitter_fraction]
/// (so with jitter a delay may exceed `max` by that fraction, which spreads retries that hit
/// the cap at the same time). `jitter_fraction` 0 gives a deterministic delay. The random
/// numbers come from a per-thread generator, so one Backoff may be shared by many threads.
struct Backoff {
    std::chrono::milliseconds initial{100};
    std::chrono::milliseconds max{1000};
    double jitter_fraction = 0.0;

    /// attempt <= 0 is treated as 1 (no delay below `initial`, apart from jitter).
    [[nodiscard]] std::chrono::milliseconds delay(int attempt) const {
        const int n = std::max(attempt, 1);
        // In double: 2^(n-1) overflows no integer type; a huge value just ends at the cap.
        double ms = static_cast<double>(initial.count()) * std::pow(2.0, n - 1);
        ms = std::min(ms, static_cast<double>(max.count()));
        const double j = std::clamp(jitter_fraction, 0.0, 1.0);
        if (j > 0.0) {
            thread_local std::mt19937_64 rng{std::random_device{}()};
            std::uniform_real_distribution<double> factor(1.0 - j, 1.0 + j);
            ms *= factor(rng);
        }
        return std::chrono::milliseconds(static_cast<std::int64_t>(ms));
    }
};

}  // namespace certconn::sdk
