// parse_size / format_size: the sizes users type into the CLI and daemon flags.
#include "common/size_parse.h"

#include <gtest/gtest.h>

namespace kelpie {
namespace {

uint64_t parsed(std::string_view text) {
  Result<uint64_t> size = parse_size(text);
  EXPECT_TRUE(size.is_ok()) << text << ": " << size.status().to_string();
  return size.is_ok() ? *size : 0;
}

int error_code(std::string_view text) {
  Result<uint64_t> size = parse_size(text);
  EXPECT_FALSE(size.is_ok()) << text << " parsed as " << (size.is_ok() ? *size : 0);
  return size.status().code();
}

TEST(ParseSize, PlainBytes) {
  EXPECT_EQ(parsed("0"), 0u);
  EXPECT_EQ(parsed("512"), 512u);
  EXPECT_EQ(parsed("512B"), 512u);
  EXPECT_EQ(parsed("512b"), 512u);
  EXPECT_EQ(parsed("0001"), 1u);
}

TEST(ParseSize, Suffixes) {
  EXPECT_EQ(parsed("4K"), 4096u);
  EXPECT_EQ(parsed("4M"), 4u << 20);
  EXPECT_EQ(parsed("10G"), uint64_t{10} << 30);
  EXPECT_EQ(parsed("2T"), uint64_t{2} << 40);
  EXPECT_EQ(parsed("3P"), uint64_t{3} << 50);
}

TEST(ParseSize, SuffixCaseAndUnitSpellings) {
  for (const char* text : {"4m", "4M", "4MB", "4Mb", "4MiB", "4mib", "4mB"}) {
    EXPECT_EQ(parsed(text), 4u << 20) << text;
  }
  EXPECT_EQ(parsed("1kib"), 1024u);
  EXPECT_EQ(parsed("1gib"), uint64_t{1} << 30);
}

TEST(ParseSize, RejectsJunkWithMessageNamingTheText) {
  for (const char* text : {"", "abc", "10X", "-1", "+1", " 1", "1 ", "1.5G", "4 K", "K", "4KiBx",
                           "4KK", "4iB", "4Bi", "0x10", "1e3", "12B3"}) {
    EXPECT_EQ(error_code(text), EINVAL) << "'" << text << "'";
  }
  Result<uint64_t> size = parse_size("10X");
  ASSERT_FALSE(size.is_ok());
  EXPECT_NE(size.status().message().find("'10X'"), std::string::npos) << size.status().message();
  EXPECT_EQ(size.status().message().find('\n'), std::string::npos);
}

TEST(ParseSize, Overflow) {
  EXPECT_EQ(error_code("99999999999999999999"), ERANGE);
  EXPECT_EQ(error_code("184467440737095516160"), ERANGE);
  EXPECT_EQ(error_code("8193P"), ERANGE);
  EXPECT_EQ(error_code("9000000T"), ERANGE);
  EXPECT_EQ(error_code("99999999999999999G"), ERANGE);
  EXPECT_EQ(error_code("9223372036854775808"), ERANGE);  // 2^63
  EXPECT_EQ(error_code("9223372036854775809"), ERANGE);
  EXPECT_EQ(error_code("8192P"), ERANGE);
  // The largest sizes that still fit.
  EXPECT_EQ(parsed("8191P"), uint64_t{8191} << 50);
  EXPECT_EQ(parsed("4611686018427387904"), uint64_t{1} << 62);
}

TEST(FormatSize, LargestExactUnit) {
  EXPECT_EQ(format_size(0), "0 B");
  EXPECT_EQ(format_size(512), "512 B");
  EXPECT_EQ(format_size(1536), "1536 B");
  EXPECT_EQ(format_size(1024), "1 KiB");
  EXPECT_EQ(format_size(4u << 20), "4 MiB");
  EXPECT_EQ(format_size(uint64_t{10} << 30), "10 GiB");
  EXPECT_EQ(format_size((uint64_t{10} << 30) + 512), "10737418752 B");
  EXPECT_EQ(format_size((uint64_t{10} << 30) + 1024), "10485761 KiB");
  EXPECT_EQ(format_size(uint64_t{3} << 40), "3 TiB");
  EXPECT_EQ(format_size(uint64_t{1} << 50), "1 PiB");
  EXPECT_EQ(format_size(uint64_t{1} << 60), "1024 PiB");
}

TEST(FormatSize, RoundTripsThroughParseSize) {
  for (uint64_t size : {uint64_t{0}, uint64_t{512}, uint64_t{4096}, uint64_t{3} << 20,
                        uint64_t{10} << 30, (uint64_t{7} << 40) + 1024}) {
    std::string text = format_size(size);
    text.erase(text.find(' '), 1);
    EXPECT_EQ(parsed(text), size) << text;
  }
}

}  // namespace
}  // namespace kelpie
