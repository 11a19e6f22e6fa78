// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// A non-owning reference to a callable (like C++26 std::function_ref): no
// allocation, two pointers, for callbacks on hot paths such as "for each
// received frame". A referenced callable object must outlive the call; a
// function pointer is stored by value.
#pragma once

#include <memory>
#include <type_traits>
#include <utility>

namespace locabus {

template <typename Signature>
class FunctionRef;

template <typename R, typename... Args>
class FunctionRef<R(Args...)> {
 public:
  /// From a plain function (or a pointer to one): kept by value.
  template <typename F>
  requires std::is_function_v<F> && std::is_invocable_r_v<R, F*, Args...> FunctionRef(F* f)
  noexcept  // NOLINT(google-explicit-constructor): used like a function parameter
      : call_([](Storage s, Args... args) -> R {
          return reinterpret_cast<F*>(s.function)(std::forward<Args>(args)...);
        }) {
    storage_.function = reinterpret_cast<void (*)()>(f);
  }

  /// From a callable object (lambda, functor): referenced, not copied.
  template <typename F>
  requires(!std::is_same_v<std::remove_cvref_t<F>, FunctionRef> &&
           !std::is_function_v<std::remove_pointer_t<std::remove_cvref_t<F>>> &&
           std::is_invocable_r_v<R, F&, Args...>) FunctionRef(F&& f)
  noexcept  // NOLINT(google-explicit-constructor)
      : call_([](Storage s, Args... args) -> R {
          return (*static_cast<std::remove_reference_t<F>*>(s.object))(std::forward<Args>(args)...);
        }) {
    storage_.object = const_cast<void*>(static_cast<const void*>(std::addressof(f)));
  }

  R operator()(Args... args) const { return call_(storage_, std::forward<Args>(args)...); }

 private:
  union Storage {
    void* object;
    void (*function)();
  };
  Storage storage_{};
  R (*call_)(Storage, Args...);
};

}  // namespace locabus
