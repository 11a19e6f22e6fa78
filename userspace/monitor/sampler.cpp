// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The sampler runs every second in the daemon's only thread, so it reads
// each source once into one reused buffer and parses it in place (string
// views and std::from_chars; no iostreams, no per-line strings).
#include "monitor/sampler.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <exception>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "common/unique_fd.hpp"
#include "monitor/record.hpp"
#include "monitor/text.hpp"

namespace locabus::monitor {
namespace {

using std::string_view;

/// Reads the whole file into buf (cleared first). /proc files report size 0,
/// so this reads until EOF. Returns 0 or an errno.
int read_file(const std::filesystem::path& path, std::string& buf) {
  buf.clear();
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return errno;
  std::size_t used = 0;
  for (;;) {
    if (buf.size() - used < 4096) buf.resize(std::max<std::size_t>(buf.size() * 2, used + 16384));
    const ssize_t n = ::read(fd.get(), buf.data() + used, buf.size() - used);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      buf.clear();
      return e;
    }
    if (n == 0) break;
    used += static_cast<std::size_t>(n);
  }
  buf.resize(used);
  return 0;
}

/// Splits text into lines and lines into whitespace-separated fields.
class Cursor {
 public:
  explicit Cursor(string_view s) noexcept : s_(s) {}
  bool done() const noexcept { return s_.empty(); }
  string_view line() noexcept {
    const auto nl = s_.find('\n');
    const string_view l = s_.substr(0, nl);
    s_.remove_prefix(nl == string_view::npos ? s_.size() : nl + 1);
    return l;
  }
  /// The next field of a line (empty at its end).
  static string_view field(string_view& l) noexcept {
    std::size_t i = 0;
    while (i < l.size() && (l[i] == ' ' || l[i] == '\t')) ++i;
    std::size_t j = i;
    while (j < l.size() && l[j] != ' ' && l[j] != '\t') ++j;
    const string_view f = l.substr(i, j - i);
    l.remove_prefix(j);
    return f;
  }

 private:
  string_view s_;
};

std::uint64_t to_u64(string_view s) noexcept {
  std::uint64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

std::uint32_t to_u32(std::uint64_t v) noexcept {
  return v > UINT32_MAX ? UINT32_MAX : static_cast<std::uint32_t>(v);
}

/// "1.52" -> 1520, exactly from the text (no floating point): the integer
/// part and up to three fractional digits (further digits are dropped).
std::uint32_t to_milli(string_view s) noexcept {
  const auto dot = s.find('.');
  std::uint64_t v = to_u64(s.substr(0, dot)) * 1000;
  if (dot != string_view::npos) {
    std::uint64_t scale = 100;
    for (std::size_t i = dot + 1; i < s.size() && scale > 0; ++i, scale /= 10) {
      if (s[i] < '0' || s[i] > '9') break;
      v += static_cast<std::uint64_t>(s[i] - '0') * scale;
    }
  }
  return to_u32(v);
}

bool starts_with_digit_after(string_view s, string_view prefix) noexcept {
  return s.size() > prefix.size() && s.starts_with(prefix) && s[prefix.size()] >= '0' &&
         s[prefix.size()] <= '9';
}

/// Strings in a record are valid UTF-8 of at most kMaxName bytes: made so
/// here, at sampling (bytes that are not UTF-8 become U+FFFD; the cut falls
/// between characters).
std::string cut(string_view s) {
  if (s.size() <= kMaxName && valid_utf8(s)) return std::string(s);
  const std::string valid = to_valid_utf8(s);
  return std::string(utf8_prefix(valid, kMaxName));
}

/// At most this many disks, filesystems and interfaces are sampled (the
/// first ones; the rest are left out and named in last_error()): with
/// names of kMaxName bytes, 512 of each take 40 + 86 + 52 parts, so a
/// sample always fits a record's kMaxParts, and a machine with thousands
/// of mounts is not statvfs()ed thousands of times a second.
constexpr std::size_t kMaxDevices = 512;
/// Parts that kMaxDevices sections of `section_len` bytes (at most) take.
constexpr std::size_t parts_for(std::size_t section_len) {
  const std::size_t per_part = (kMaxPartLen - kRecordHeaderLen) / section_len;
  return (kMaxDevices + per_part - 1) / per_part;
}
static_assert(1 /* system, cpu, memory, locabus */ +
                      parts_for(kSectionHeaderLen + 1 + kMaxName + 5 * 8) /* disks */ +
                      parts_for(kSectionHeaderLen + 3 * (1 + kMaxName) + 5 * 8) /* filesystems */ +
                      parts_for(kSectionHeaderLen + 1 + kMaxName + 8 * 8) /* interfaces */
                  <= kMaxParts,
              "a sample of kMaxDevices of each kind must fit a record");

/// /proc/self/mounts escapes ' ', '\t', '\n' and '\\' as \ooo.
std::string unescape_mount(string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' &&
        s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

/// Pseudo, virtual and network filesystems: not statvfs()ed (a network one
/// could hang the daemon; the others describe no storage).
bool skipped_fstype(string_view t) noexcept {
  static constexpr string_view kSkip[] = {
      "proc",    "sysfs",       "cgroup",  "cgroup2",    "devpts",  "devtmpfs",  "tmpfs",      "ramfs",
      "bpf",     "tracefs",     "debugfs", "securityfs", "mqueue",  "hugetlbfs", "pstore",     "configfs",
      "fusectl", "binfmt_misc", "autofs",  "nsfs",       "overlay", "squashfs",  "rpc_pipefs", "nfs",
      "nfs4",    "cifs",        "smb3",    "ceph",       "9p",      "efivarfs",  "selinuxfs",  "nfsd",
      "fuse",    "smbfs",       "afs",     "lustre",     "gpfs",    "glusterfs", "beegfs",     "davfs"};
  if (t.starts_with("fuse.")) return true;
  return std::find(std::begin(kSkip), std::end(kSkip), t) != std::end(kSkip);
}

bool under(string_view path, string_view dir) noexcept {
  return path.starts_with(dir) && (path.size() == dir.size() || path[dir.size()] == '/');
}

bool skipped_mountpoint(string_view m) noexcept {
  return under(m, "/proc") || under(m, "/sys") || under(m, "/dev") || under(m, "/run/credentials");
}

}  // namespace

Sampler::Sampler(SamplerOptions o) : o_(std::move(o)) {}

NodeStats Sampler::sample() {
  NodeStats s;
  error_.clear();
  const auto fail = [this](const std::string& what, int err) {
    if (!error_.empty()) error_ += "; ";
    error_ += what;
    error_ += ": ";
    error_ += std::strerror(err);
  };
  const auto left_out = [this](std::size_t n, const char* what) {
    if (n == 0) return;
    if (!error_.empty()) error_ += "; ";
    error_ += std::to_string(n);
    error_ += ' ';
    error_ += what;
    error_ += " beyond the first ";
    error_ += std::to_string(kMaxDevices);
    error_ += " left out (a record carries at most that many)";
  };
  try {
    timespec ts{};
    ::clock_gettime(CLOCK_REALTIME, &ts);
    s.sampled_at_ms =
        static_cast<std::uint64_t>(ts.tv_sec) * 1000 + static_cast<std::uint64_t>(ts.tv_nsec) / 1'000'000;

    std::string buf;
    buf.reserve(16384);
    const auto read = [&](const std::filesystem::path& p) {
      const int e = read_file(p, buf);
      if (e != 0) fail("read " + p.string(), e);
      return e == 0;
    };

    // /proc/stat: the aggregate "cpu" line (ticks), one cpuN line per online CPU.
    if (read(o_.proc / "stat")) {
      static const long hz_raw = ::sysconf(_SC_CLK_TCK);
      const std::uint64_t hz = hz_raw > 0 ? static_cast<std::uint64_t>(hz_raw) : 100;
      std::array<std::uint64_t, kCpuModes> ticks{};
      bool have_cpu = false;
      Cursor c(buf);
      while (!c.done()) {
        string_view l = c.line();
        const string_view key = Cursor::field(l);
        if (key == "cpu") {
          have_cpu = true;
          for (auto& t : ticks) t = to_u64(Cursor::field(l));
        } else if (starts_with_digit_after(key, "cpu")) {
          ++s.cpus;
        } else if (key == "procs_running") {
          s.procs_running = to_u32(to_u64(Cursor::field(l)));
        } else if (key == "procs_blocked") {
          s.procs_blocked = to_u32(to_u64(Cursor::field(l)));
        } else if (key == "btime") {
          s.boot_time_s = to_u64(Cursor::field(l));
        }
      }
      if (have_cpu) {
        for (std::size_t i = 0; i < kCpuModes; ++i) s.cpu_ms[i] = ticks[i] * 1000 / hz;
        // Shares of the ticks since the previous sample (last_cpu_ keeps raw
        // ticks, so the shares are exact). A counter that went back (iowait
        // can) counts 0. Floors first, then the thousandths left over go to
        // the largest remainders (ties: the earlier mode), so they add up to
        // exactly 1000.
        if (have_last_) {
          std::array<std::uint64_t, kCpuModes> d{};
          std::uint64_t total = 0;
          for (std::size_t i = 0; i < kCpuModes; ++i) {
            d[i] = ticks[i] > last_cpu_[i] ? ticks[i] - last_cpu_[i] : 0;
            total += d[i];
          }
          if (total > 0) {
            std::array<std::uint64_t, kCpuModes> rem{};
            std::uint64_t given = 0;
            for (std::size_t i = 0; i < kCpuModes; ++i) {
              s.cpu_permille[i] = static_cast<std::uint16_t>(d[i] * 1000 / total);
              rem[i] = d[i] * 1000 % total;
              given += s.cpu_permille[i];
            }
            for (; given < 1000; ++given) {
              std::size_t best = 0;
              for (std::size_t i = 1; i < kCpuModes; ++i)
                if (rem[i] > rem[best]) best = i;
              ++s.cpu_permille[best];
              rem[best] = 0;
            }
          }
        }
        last_cpu_ = ticks;
        have_last_ = true;
      }
    }

    // /proc/loadavg: "0.52 0.58 0.59 2/1234 56789".
    if (read(o_.proc / "loadavg")) {
      string_view l = Cursor(buf).line();
      s.load1_milli = to_milli(Cursor::field(l));
      s.load5_milli = to_milli(Cursor::field(l));
      s.load15_milli = to_milli(Cursor::field(l));
      const string_view tasks = Cursor::field(l);
      if (const auto slash = tasks.find('/'); slash != string_view::npos)
        s.threads = to_u32(to_u64(tasks.substr(slash + 1)));
    }

    // /proc/meminfo: "MemTotal:       16318424 kB".
    if (read(o_.proc / "meminfo")) {
      Cursor c(buf);
      while (!c.done()) {
        string_view l = c.line();
        string_view key = Cursor::field(l);
        if (!key.ends_with(':')) continue;
        key.remove_suffix(1);
        std::uint64_t* to = nullptr;
        if (key == "MemTotal")
          to = &s.mem_total;
        else if (key == "MemFree")
          to = &s.mem_free;
        else if (key == "MemAvailable")
          to = &s.mem_available;
        else if (key == "Buffers")
          to = &s.mem_buffers;
        else if (key == "Cached")
          to = &s.mem_cached;
        else if (key == "SwapTotal")
          to = &s.swap_total;
        else if (key == "SwapFree")
          to = &s.swap_free;
        if (to == nullptr) continue;
        const std::uint64_t v = to_u64(Cursor::field(l));
        *to = Cursor::field(l) == "kB" ? v * 1024 : v;
      }
    }

    // /proc/diskstats: whole disks only, like node_exporter. Fields after
    // the name: reads completed, merged, sectors read, ms reading, writes
    // completed, merged, sectors written, ms writing, in progress, ms doing
    // I/O (field 13 of the line), ... Sectors are 512 bytes.
    if (read(o_.proc / "diskstats")) {
      const std::filesystem::path block = o_.sys / "class" / "block";
      std::string sysname;
      std::size_t skipped = 0;
      Cursor c(buf);
      while (!c.done()) {
        string_view l = c.line();
        Cursor::field(l);  // major
        Cursor::field(l);  // minor
        const string_view dev = Cursor::field(l);
        if (dev.empty()) continue;
        if (starts_with_digit_after(dev, "loop") || starts_with_digit_after(dev, "ram") ||
            starts_with_digit_after(dev, "zram") || starts_with_digit_after(dev, "fd") ||
            starts_with_digit_after(dev, "sr"))
          continue;
        // sysfs spells '/' in a device name ("cciss/c0d0") as '!'.
        sysname.assign(dev);
        std::replace(sysname.begin(), sysname.end(), '/', '!');
        if (::access((block / sysname / "partition").c_str(), F_OK) == 0) continue;
        if (s.disks.size() >= kMaxDevices) {
          ++skipped;
          continue;
        }
        std::array<std::uint64_t, 10> f{};
        for (auto& v : f) v = to_u64(Cursor::field(l));
        DiskStats d;
        d.device = cut(dev);
        d.reads_completed = f[0];
        d.read_bytes = f[2] * 512;
        d.writes_completed = f[4];
        d.written_bytes = f[6] * 512;
        d.io_time_ms = f[9];
        s.disks.push_back(std::move(d));
      }
      left_out(skipped, "disks");
    }

    // /proc/net/dev: two header lines, then "  eth0: rx(8 columns) tx(8 columns)".
    if (read(o_.proc / "net" / "dev")) {
      std::size_t skipped = 0;
      Cursor c(buf);
      while (!c.done()) {
        string_view l = c.line();
        const auto colon = l.find(':');
        if (colon == string_view::npos) continue;
        string_view name = l.substr(0, colon);
        name = Cursor::field(name);
        if (name.empty()) continue;
        if (s.nets.size() >= kMaxDevices) {
          ++skipped;
          continue;
        }
        l.remove_prefix(colon + 1);
        std::array<std::uint64_t, 12> f{};
        for (auto& v : f) v = to_u64(Cursor::field(l));
        NetStats n;
        n.device = cut(name);
        n.rx_bytes = f[0];
        n.rx_packets = f[1];
        n.rx_errs = f[2];
        n.rx_drop = f[3];
        n.tx_bytes = f[8];
        n.tx_packets = f[9];
        n.tx_errs = f[10];
        n.tx_drop = f[11];
        s.nets.push_back(std::move(n));
      }
      left_out(skipped, "interfaces");
    }

    // proc/self/mounts: local filesystems, each mount point once (the last
    // mount over a point is the one visible there).
    if (o_.filesystems && read(o_.proc / "self" / "mounts")) {
      // Full mount points -> index in s.filesystems (a hash: thousands of
      // mount lines are not compared with each other).
      std::unordered_map<std::string, std::size_t> seen;
      std::size_t skipped = 0;
      Cursor c(buf);
      while (!c.done()) {
        string_view l = c.line();
        const string_view dev = Cursor::field(l);
        const string_view mnt = Cursor::field(l);
        const string_view type = Cursor::field(l);
        if (type.empty() || skipped_fstype(type)) continue;
        std::string point = unescape_mount(mnt);
        if (skipped_mountpoint(point)) continue;
        const auto it = seen.find(point);
        if (it == seen.end() && s.filesystems.size() >= kMaxDevices) {  // before statvfs(): no cost
          ++skipped;
          continue;
        }
        struct statvfs v {};
        if (::statvfs(point.c_str(), &v) != 0) {
          fail("statvfs " + point, errno);
          continue;
        }
        FilesystemStats f;
        f.mountpoint = cut(point);
        f.device = cut(unescape_mount(dev));
        f.fstype = cut(type);
        const std::uint64_t unit = v.f_frsize != 0 ? v.f_frsize : v.f_bsize;
        f.size_bytes = static_cast<std::uint64_t>(v.f_blocks) * unit;
        f.free_bytes = static_cast<std::uint64_t>(v.f_bfree) * unit;
        f.avail_bytes = static_cast<std::uint64_t>(v.f_bavail) * unit;
        f.files = v.f_files;
        f.files_free = v.f_ffree;
        if (it != seen.end()) {
          s.filesystems[it->second] = std::move(f);
        } else {
          seen.emplace(std::move(point), s.filesystems.size());
          s.filesystems.push_back(std::move(f));
        }
      }
      left_out(skipped, "filesystems");
    }

    // Processes: the numeric directories of proc.
    {
      const std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(o_.proc.c_str()), &::closedir);
      if (!dir) {
        fail("opendir " + o_.proc.string(), errno);
      } else {
        std::uint32_t n = 0;
        while (const dirent* e = ::readdir(dir.get())) {
          const char* p = e->d_name;
          if (*p == '\0') continue;
          while (*p >= '0' && *p <= '9') ++p;
          if (*p == '\0') ++n;
        }
        s.processes = n;
      }
    }

    if (read(o_.proc / "sys" / "kernel" / "hostname")) s.hostname = cut(Cursor(buf).line());
  } catch (const std::exception& e) {
    // Only allocation can throw here: the sample keeps what it had, and
    // sample() never throws (if even the message cannot be made, it is empty).
    try {
      fail(std::string("sample: ") + e.what(), ENOMEM);
    } catch (const std::exception&) {
      error_.clear();
    }
  }
  return s;
}

}  // namespace locabus::monitor
