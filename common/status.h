// Status and Result<T>: expected failures as values.
//
// Contract: every fallible operation on the I/O path returns Status or Result<T>.
// Codes are errno values so they map 1:1 onto NBD error replies (nbd_errno()).
// Programmer errors are not Status: they are KELPIE_ASSERT (always on).
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

namespace kelpie {

#define KELPIE_ASSERT(cond)                                                               \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      std::fprintf(stderr, "assertion failed: %s at %s:%d\n", #cond, __FILE__, __LINE__); \
      std::abort();                                                                       \
    }                                                                                     \
  } while (0)

class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status ok() { return Status(); }
  static Status error(int errno_code, std::string message = {}) {
    KELPIE_ASSERT(errno_code != 0);
    return Status(errno_code, std::move(message));
  }

  bool is_ok() const { return code_ == 0; }
  explicit operator bool() const { return is_ok(); }
  int code() const { return code_; }
  const std::string& message() const { return message_; }
  // "message (strerror)" for logs and CLI output.
  std::string to_string() const;

 private:
  Status(int code, std::string message) : code_(code), message_(std::move(message)) {}
  int code_ = 0;
  std::string message_;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Status status) : value_(std::move(status)) {  // NOLINT
    KELPIE_ASSERT(!std::get<Status>(value_).is_ok());
  }

  bool is_ok() const { return value_.index() == 0; }
  explicit operator bool() const { return is_ok(); }
  T& value() {
    KELPIE_ASSERT(is_ok());
    return std::get<0>(value_);
  }
  const T& value() const {
    KELPIE_ASSERT(is_ok());
    return std::get<0>(value_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() { return value(); }
  Status status() const { return is_ok() ? Status::ok() : std::get<1>(value_); }

 private:
  std::variant<T, Status> value_;
};

}  // namespace kelpie
