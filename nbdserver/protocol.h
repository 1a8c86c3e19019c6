// NBD protocol constants (NetworkBlockDevice/nbd doc/proto.md), in one place.
#pragma once

#include <cstdint>

namespace kelpie::nbd {

constexpr uint64_t kNbdMagic = 0x4e42444d41474943ULL;      // "NBDMAGIC"
constexpr uint64_t kOptionMagic = 0x49484156454F5054ULL;   // "IHAVEOPT"
constexpr uint64_t kOptionReplyMagic = 0x0003e889045565a9ULL;
constexpr uint32_t kRequestMagic = 0x25609513;
constexpr uint32_t kSimpleReplyMagic = 0x67446698;
constexpr uint32_t kStructuredReplyMagic = 0x668e33ef;

// Handshake flags (server) and client flags.
constexpr uint16_t kFlagFixedNewstyle = 1 << 0;
constexpr uint16_t kFlagNoZeroes = 1 << 1;
constexpr uint32_t kClientFlagFixedNewstyle = 1 << 0;
constexpr uint32_t kClientFlagNoZeroes = 1 << 1;

// Options.
constexpr uint32_t kOptExportName = 1;
constexpr uint32_t kOptAbort = 2;
constexpr uint32_t kOptList = 3;
constexpr uint32_t kOptStartTls = 5;
constexpr uint32_t kOptInfo = 6;
constexpr uint32_t kOptGo = 7;
constexpr uint32_t kOptStructuredReply = 8;
constexpr uint32_t kOptListMetaContext = 9;
constexpr uint32_t kOptSetMetaContext = 10;

// Option replies.
constexpr uint32_t kRepAck = 1;
constexpr uint32_t kRepServer = 2;
constexpr uint32_t kRepInfo = 3;
constexpr uint32_t kRepMetaContext = 4;
constexpr uint32_t kRepErrUnsup = (1u << 31) + 1;
constexpr uint32_t kRepErrPolicy = (1u << 31) + 2;
constexpr uint32_t kRepErrInvalid = (1u << 31) + 3;
constexpr uint32_t kRepErrUnknown = (1u << 31) + 6;
constexpr uint32_t kRepErrTooBig = (1u << 31) + 9;

// NBD_INFO types.
constexpr uint16_t kInfoExport = 0;
constexpr uint16_t kInfoName = 1;
constexpr uint16_t kInfoDescription = 2;
constexpr uint16_t kInfoBlockSize = 3;

// Transmission flags.
constexpr uint16_t kTxHasFlags = 1 << 0;
constexpr uint16_t kTxReadOnly = 1 << 1;
constexpr uint16_t kTxSendFlush = 1 << 2;
constexpr uint16_t kTxSendFua = 1 << 3;
constexpr uint16_t kTxSendTrim = 1 << 5;
constexpr uint16_t kTxSendWriteZeroes = 1 << 6;
constexpr uint16_t kTxSendDf = 1 << 7;
constexpr uint16_t kTxCanMultiConn = 1 << 8;
constexpr uint16_t kTxSendCache = 1 << 10;
constexpr uint16_t kTxSendFastZero = 1 << 11;

// Commands and their flags.
constexpr uint16_t kCmdRead = 0;
constexpr uint16_t kCmdWrite = 1;
constexpr uint16_t kCmdDisc = 2;
constexpr uint16_t kCmdFlush = 3;
constexpr uint16_t kCmdTrim = 4;
constexpr uint16_t kCmdCache = 5;
constexpr uint16_t kCmdWriteZeroes = 6;
constexpr uint16_t kCmdBlockStatus = 7;
constexpr uint16_t kCmdFlagFua = 1 << 0;
constexpr uint16_t kCmdFlagNoHole = 1 << 1;
constexpr uint16_t kCmdFlagDf = 1 << 2;
constexpr uint16_t kCmdFlagReqOne = 1 << 3;
constexpr uint16_t kCmdFlagFastZero = 1 << 4;

// Structured reply chunks.
constexpr uint16_t kReplyFlagDone = 1 << 0;
constexpr uint16_t kReplyTypeNone = 0;
constexpr uint16_t kReplyTypeOffsetData = 1;
constexpr uint16_t kReplyTypeBlockStatus = 5;
constexpr uint16_t kReplyTypeError = (1 << 15) + 1;

// base:allocation
constexpr uint32_t kStateHole = 1 << 0;
constexpr uint32_t kStateZero = 1 << 1;
constexpr uint32_t kBaseAllocationContextId = 1;

// Errors on the wire (Linux values, fixed by the protocol).
constexpr uint32_t kEperm = 1;
constexpr uint32_t kEio = 5;
constexpr uint32_t kEnomem = 12;
constexpr uint32_t kEinval = 22;
constexpr uint32_t kEnospc = 28;
constexpr uint32_t kEoverflow = 75;
constexpr uint32_t kEnotsup = 95;
constexpr uint32_t kEshutdown = 108;

// Kelpie's limits, advertised through NBD_INFO_BLOCK_SIZE and enforced at the edge.
constexpr uint32_t kMinBlockSize = 1;
constexpr uint32_t kPreferredBlockSize = 4096;
constexpr uint32_t kMaxPayload = 32u << 20;          // largest READ/WRITE
constexpr uint32_t kMaxOptionLength = 64u << 10;     // larger options end the connection
constexpr uint32_t kMaxExportNameLength = 4096;
constexpr uint32_t kMaxInFlightRequests = 128;       // per connection
constexpr uint64_t kMaxInFlightBytes = 256ull << 20; // per connection

}  // namespace kelpie::nbd
