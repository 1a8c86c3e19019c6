#include "common/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

namespace kelpie {

void init_logging(const std::string& level, const std::string& file) {
  std::shared_ptr<spdlog::logger> logger =
      file.empty() ? spdlog::stderr_color_mt("kelpie") : spdlog::basic_logger_mt("kelpie", file);
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ [%t] %v");
}

}  // namespace kelpie
