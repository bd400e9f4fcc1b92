// The engine's storage: buffers that never zero-fill on growth, the state of
// one stack slot (K and, for the NTK, Theta; full tensor or diagonal) and the
// tap tables of one convolution axis.
#pragma once

#include <memory>
#include <new>
#include <utility>
#include <vector>

#include "vecmath.hpp"

namespace convkernel {
namespace CK_ARCH {

// An allocator whose value-less construct() default-initialises: growing a
// buffer of floats with resize() then leaves the new elements uninitialised
// instead of zero-filling them (every buffer below is written before it is
// read; the few that need zeros are assigned them explicitly).  The engine's
// buffers shrink and grow again between layers and pairs, so zero-filling
// on every growth cost a memset of up to a whole 4-D tensor per op.
template <class T, class A = std::allocator<T>>
class DefaultInitAllocator : public A {
    using traits = std::allocator_traits<A>;

  public:
    template <class U>
    struct rebind {
        using other = DefaultInitAllocator<U, typename traits::template rebind_alloc<U>>;
    };
    using A::A;
    DefaultInitAllocator() = default;
    template <class U>
    DefaultInitAllocator(const DefaultInitAllocator<U, typename traits::template rebind_alloc<U>>& o)
        : A(o) {}
    template <class U>
    void construct(U* ptr) noexcept(std::is_nothrow_default_constructible<U>::value) {
        ::new (static_cast<void*>(ptr)) U;
    }
    template <class U, class... Args>
    void construct(U* ptr, Args&&... args) {
        traits::construct(static_cast<A&>(*this), ptr, std::forward<Args>(args)...);
    }
};

template <class T>
using Buffer = std::vector<T, DefaultInitAllocator<T>>;

template <class T>
struct State {
    int64_t h = 0, w = 0;
    int full = 0;
    Buffer<T> K, Th;
    int64_t size() const { return full ? h * h * w * w : h * w; }
};

// One axis of a convolution: for each tap, the input index of each output
// (-1 in the zero padding), and for stride 1 without wrap-around the
// contiguous valid range of outputs with their input offset.
struct ConvAxis {
    int64_t n_in = 0, n_out = 0, k = 0;
    bool contiguous = false;          // stride 1 and zero padding
    bool unit = false;                // contiguous without dilation: consecutive taps
    std::vector<int64_t> tab;         // k x n_out
    std::vector<int64_t> lo, hi, off;  // per tap (contiguous case)

    void set(int64_t nin, int64_t nout, int64_t kk, int64_t s, int64_t dil, int64_t pad,
             bool circular) {
        n_in = nin; n_out = nout; k = kk;
        contiguous = (s == 1 && !circular);
        unit = contiguous && dil == 1;
        tab.assign((size_t)(k * n_out), -1);
        lo.assign((size_t)k, 0); hi.assign((size_t)k, 0); off.assign((size_t)k, 0);
        for (int64_t d = 0; d < k; ++d) {
            int64_t first = n_out, last = -1;
            for (int64_t a = 0; a < n_out; ++a) {
                int64_t i = s * a + dil * d - pad;
                if (circular) {
                    i %= n_in;
                    if (i < 0) i += n_in;
                } else if (i < 0 || i >= n_in) {
                    i = -1;
                }
                tab[(size_t)(d * n_out + a)] = i;
                if (i >= 0) { first = std::min(first, a); last = a; }
            }
            lo[(size_t)d] = first;
            hi[(size_t)d] = last + 1 > first ? last + 1 : first;
            off[(size_t)d] = dil * d - pad;
        }
    }
};

}  // namespace CK_ARCH
}  // namespace convkernel
