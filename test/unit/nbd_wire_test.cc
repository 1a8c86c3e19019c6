// Option and request parsing at the NBD edge.
#include "nbdserver/wire.h"

#include <gtest/gtest.h>

#include "common/bytes.h"

namespace kelpie::nbd {
namespace {

std::vector<uint8_t> info_payload(const std::string& name, std::vector<uint16_t> types,
                                  uint32_t claimed_length) {
  std::vector<uint8_t> out(4 + name.size() + 2 + 2 * types.size());
  put_be32(out.data(), claimed_length);
  std::copy(name.begin(), name.end(), out.begin() + 4);
  put_be16(out.data() + 4 + name.size(), static_cast<uint16_t>(types.size()));
  for (size_t i = 0; i < types.size(); ++i) put_be16(out.data() + 6 + name.size() + 2 * i, types[i]);
  return out;
}

TEST(InfoRequest, ParsesNameAndTypes) {
  auto parsed = parse_info_request(info_payload("disk", {kInfoName, kInfoBlockSize}, 4));
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->export_name, "disk");
  EXPECT_EQ(parsed->info_types, (std::vector<uint16_t>{kInfoName, kInfoBlockSize}));
}

TEST(InfoRequest, RejectsLyingLengths) {
  EXPECT_FALSE(parse_info_request(info_payload("disk", {}, 0xffffffff)).has_value());
  EXPECT_FALSE(parse_info_request(info_payload("disk", {}, 5)).has_value());
  auto short_count = info_payload("disk", {kInfoName}, 4);
  short_count.pop_back();
  EXPECT_FALSE(parse_info_request(short_count).has_value());
  EXPECT_FALSE(parse_info_request({}).has_value());
  std::string long_name(5000, 'x');
  EXPECT_FALSE(parse_info_request(info_payload(long_name, {}, 5000)).has_value());
}

TEST(MetaContextRequest, ParsesQueries) {
  std::vector<uint8_t> p(4 + 1 + 4 + 4 + 15);
  put_be32(p.data(), 1);
  p[4] = 'd';
  put_be32(p.data() + 5, 1);
  put_be32(p.data() + 9, 15);
  std::string q = "base:allocation";
  std::copy(q.begin(), q.end(), p.begin() + 13);
  auto parsed = parse_meta_context_request(p);
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->export_name, "d");
  EXPECT_EQ(parsed->queries, std::vector<std::string>{"base:allocation"});
  put_be32(p.data() + 5, 2);  // claims a second query that is not there
  EXPECT_FALSE(parse_meta_context_request(p).has_value());
}

Request make(uint16_t type, uint64_t offset, uint32_t length, uint16_t flags = 0) {
  return Request{kRequestMagic, flags, type, 7, offset, length};
}

TEST(Request, HeaderParsesBigEndianFields) {
  uint8_t raw[kRequestHeaderSize];
  put_be32(raw, kRequestMagic);
  put_be16(raw + 4, kCmdFlagFua);
  put_be16(raw + 6, kCmdWrite);
  put_be64(raw + 8, 0x1122334455667788ULL);
  put_be64(raw + 16, 4096);
  put_be32(raw + 24, 512);
  Request r = parse_request_header(raw);
  EXPECT_EQ(r.magic, kRequestMagic);
  EXPECT_EQ(r.flags, kCmdFlagFua);
  EXPECT_EQ(r.type, kCmdWrite);
  EXPECT_EQ(r.cookie, 0x1122334455667788ULL);
  EXPECT_EQ(r.offset, 4096u);
  EXPECT_EQ(r.length, 512u);
}

TEST(Request, ValidationErrorsFollowTheSpec) {
  ExportState s{1 << 20, false, true, true};
  EXPECT_EQ(validate_request(make(kCmdRead, 0, 4096), s), 0u);
  EXPECT_EQ(validate_request(make(kCmdRead, (1 << 20) - 1, 2), s), kEinval);
  EXPECT_EQ(validate_request(make(kCmdWrite, (1 << 20) - 1, 2), s), kEnospc);
  EXPECT_EQ(validate_request(make(kCmdWriteZeroes, 1 << 20, 1), s), kEnospc);
  EXPECT_EQ(validate_request(make(kCmdTrim, 1 << 20, 1), s), kEinval);
  EXPECT_EQ(validate_request(make(kCmdRead, UINT64_MAX - 10, 100), s), kEinval);  // wraps 2^64
  EXPECT_EQ(validate_request(make(kCmdWrite, UINT64_MAX, 1), s), kEnospc);
  EXPECT_EQ(validate_request(make(99, 0, 0), s), kEinval);
  EXPECT_EQ(validate_request(make(kCmdRead, 0, 1, 1 << 9), s), kEinval);          // unknown flag
  EXPECT_EQ(validate_request(make(kCmdWrite, 0, 1, kCmdFlagNoHole), s), kEinval);  // wrong command
  EXPECT_EQ(validate_request(make(kCmdWriteZeroes, 0, 1, kCmdFlagNoHole | kCmdFlagFastZero), s), 0u);
  EXPECT_EQ(validate_request(make(kCmdFlush, 0, 0), s), 0u);
  EXPECT_EQ(validate_request(make(kCmdFlush, 1, 0), s), kEinval);
  EXPECT_EQ(validate_request(make(kCmdBlockStatus, 0, 0), s), kEinval);
}

TEST(Request, OversizedPayloads) {
  ExportState s{uint64_t{1} << 40, false, true, true};
  EXPECT_EQ(validate_request(make(kCmdWrite, 0, 64u << 20), s), kEinval);
  EXPECT_EQ(validate_request(make(kCmdRead, 0, 64u << 20), s), kEinval);
  EXPECT_EQ(validate_request(make(kCmdRead, 0, 64u << 20, kCmdFlagDf), s), kEoverflow);
  EXPECT_EQ(validate_request(make(kCmdRead, 0, 32u << 20), s), 0u);
}

TEST(Request, ReadOnlyAndNegotiationDependentCommands) {
  ExportState ro{1 << 20, true, false, false};
  EXPECT_EQ(validate_request(make(kCmdWrite, 0, 1), ro), kEperm);
  EXPECT_EQ(validate_request(make(kCmdTrim, 0, 1), ro), kEperm);
  EXPECT_EQ(validate_request(make(kCmdWriteZeroes, 0, 1), ro), kEperm);
  EXPECT_EQ(validate_request(make(kCmdRead, 0, 1), ro), 0u);
  EXPECT_EQ(validate_request(make(kCmdBlockStatus, 0, 1), ro), kEinval);  // no meta context
  EXPECT_EQ(validate_request(make(kCmdRead, 0, 1, kCmdFlagDf), ro), kEinval);  // DF needs structured
}

}  // namespace
}  // namespace kelpie::nbd
