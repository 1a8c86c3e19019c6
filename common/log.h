// Logging through spdlog. init_logging() once in main; then the macros anywhere.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace kelpie {

// level: trace, debug, info, warn, error, critical. file empty = stderr.
void init_logging(const std::string& level, const std::string& file);

}  // namespace kelpie

#define KELPIE_LOG_DEBUG(...) spdlog::debug(__VA_ARGS__)
#define KELPIE_LOG_INFO(...) spdlog::info(__VA_ARGS__)
#define KELPIE_LOG_WARN(...) spdlog::warn(__VA_ARGS__)
#define KELPIE_LOG_ERROR(...) spdlog::error(__VA_ARGS__)
#define KELPIE_LOG_CRITICAL(...) spdlog::critical(__VA_ARGS__)
