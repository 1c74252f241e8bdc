// The native CSV parser (manualnn/csvfast.py's "native"): the numbers of a clean CSV file already read and
// checked into memory, parsed on every CPU at once.
//
// It takes only the plainest files and says None to anything else, so that numpy's or pandas' parser, or
// the careful reader (manualnn/csvread.py), reads them with every message they have:
//   - every row one line, ended by \n or \r\n (a lone \r was made \n before); a line that is empty (or only
//     \r) is no row; no quote anywhere (the caller checks);
//   - exactly `width` cells a row, split by a one-character delimiter;
//   - a number column's cell: [+-] digits [. digits] [e|E [+-] digits] (a dot with digits on one side at
//     least), with spaces around it allowed; anything else (empty, NA, nan, inf, 1_000, text) says None;
//   - other columns are skipped unread (the caller sends files with text columns elsewhere).
// Each number is correctly rounded, as Python's float() rounds it: a number of at most 19 digits whose
// digits fit in 53 bits and without an exponent is that integer over a power of ten at most 1e22, both
// exact, so the one division rounds correctly (Clinger's fast path); every other number goes to
// std::from_chars, correctly rounded too; one out of a double's range says None.
//
// The work: the file's body is cut after line ends into pieces of about kPiece bytes; threads take pieces
// in turn (a thread slowed by another process takes fewer). One pass counts each piece's lines (`room`), so
// each piece's rows have their place in the output before any is parsed; a second pass parses into them.
// The numbers never depend on the threads or the cuts.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace py = pybind11;

namespace {

constexpr int64_t kPiece = 1 << 20;       // bytes a piece (cut after the next line end)
constexpr int64_t kMostPieces = 4096;
constexpr double kPow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                             1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

inline bool digit(char c) { return static_cast<unsigned char>(c - '0') < 10; }

// The number at q (after any spaces, before any spaces), read no further than `end`: its value into `out`
// and where it ends (spaces included), or nullptr where no number starts at q.
const char* number(const char* q, const char* end, double& out) {
  while (q < end && *q == ' ') ++q;
  bool negative = false;
  if (q < end && (*q == '+' || *q == '-')) negative = *q++ == '-';
  const char* digits = q;
  uint64_t m = 0;
  while (q < end && digit(*q)) m = m * 10 + static_cast<uint64_t>(*q++ - '0');
  int64_t whole = q - digits, fraction = 0;
  if (q < end && *q == '.') {
    const char* first = ++q;
    while (q < end && digit(*q)) m = m * 10 + static_cast<uint64_t>(*q++ - '0');
    fraction = q - first;
  }
  if (whole + fraction == 0) return nullptr;
  bool exponent = q < end && (*q == 'e' || *q == 'E');
  if (exponent) {
    ++q;
    if (q < end && (*q == '+' || *q == '-')) ++q;
    const char* first = q;
    while (q < end && digit(*q)) ++q;
    if (q == first) return nullptr;
  }
  double value;
  if (!exponent && whole + fraction <= 19 && m <= (uint64_t{1} << 53) && fraction <= 22) {
    value = static_cast<double>(m) / kPow10[fraction];   // both exact: one correctly rounded division
  } else {
#if defined(__cpp_lib_to_chars) && __cpp_lib_to_chars >= 201611L
    auto got = std::from_chars(digits, q, value, std::chars_format::general);
    if (got.ec != std::errc() || got.ptr != q) return nullptr;   // out of range, or not all of it read
#else
    return nullptr;   // a C++ library without floating-point from_chars: another parser reads the file
#endif
  }
  out = negative ? -value : value;
  while (q < end && *q == ' ') ++q;
  return q;
}

struct Table {
  const char* data;
  char delimiter;
  int64_t width;
  std::vector<int64_t> slot;     // column -> its place among the number columns, or -1 (skipped)
  int64_t columns;               // number columns

  // The rows of [begin, end) into `out` (room for `most` rows of `columns`); the rows parsed, or -1 where a
  // row is not taken.
  int64_t parse(int64_t begin, int64_t end, double* out, int64_t most, const std::atomic<bool>& stop) const {
    int64_t rows = 0;
    const char* q = data + begin;
    const char* stop_at = data + end;
    while (q < stop_at) {
      if (stop.load(std::memory_order_relaxed)) return -1;
      const char* newline = static_cast<const char*>(std::memchr(q, '\n', stop_at - q));
      const char* next = newline ? newline + 1 : stop_at;
      const char* line_end = newline ? newline : stop_at;
      if (line_end > q && line_end[-1] == '\r') --line_end;
      if (line_end == q) {   // an empty line: no row
        q = next;
        continue;
      }
      if (rows == most) return -1;                          // (never, for rows that are all taken: see room)
      double* row = out + rows * columns;
      int64_t column = 0;
      const char* cell = q;
      while (true) {                 // cell: where this column's cell starts
        if (column >= width) return -1;                     // more cells than the header's
        int64_t s = slot[column++];
        const char* cell_end;
        if (s >= 0) {
          cell_end = number(cell, line_end, row[s]);
          if (!cell_end || (cell_end < line_end && *cell_end != delimiter)) return -1;
        } else {
          cell_end = static_cast<const char*>(std::memchr(cell, delimiter, line_end - cell));
          if (!cell_end) cell_end = line_end;
        }
        if (cell_end == line_end) break;
        cell = cell_end + 1;
      }
      if (column != width) return -1;                       // fewer cells
      ++rows;
      q = next;
    }
    return rows;
  }
};

// The most rows [q, end) can hold: its lines, and no more than rows of the fewest bytes a row taken has (a
// digit per number column, a delimiter between cells, a line end but on the last: n rows take at least
// n * (columns + width) - 1 bytes), so that a file of many short or empty lines never has room made for
// more numbers than its bytes could hold (the memory csvread's budget counts: at most 4 bytes of float64
// per byte of the file); a piece of empty lines under a wide header gets none.
int64_t room(const char* q, const char* end, const Table& table) {
  int64_t lines = 0;
  for (const char* p = q; p < end;) {
    const char* newline = static_cast<const char*>(std::memchr(p, '\n', end - p));
    ++lines;
    if (!newline) break;                                    // a last line with no line end
    p = newline + 1;
  }
  return std::min(lines, (end - q + 1) / (table.columns + table.width));
}

// fn(piece) for every piece, on `threads` threads, each taking the next piece when it is done.
void each_piece(int64_t pieces, int threads, const std::function<void(int64_t)>& fn) {
  std::atomic<int64_t> next{0};
  auto work = [&] {
    for (int64_t i = next++; i < pieces; i = next++) fn(i);
  };
  std::vector<std::thread> team;
  try {
    for (int t = 1; t < std::min<int64_t>(threads, pieces); ++t) team.emplace_back(work);
  } catch (const std::system_error&) {   // no more threads to be had (a process limit): fewer take the pieces
  }
  work();
  for (auto& t : team) t.join();
}

}  // namespace

// float64 [rows, len(numbers)] (the `numbers` columns in order), or None where the file is not one taken.
// piece: bytes a piece, 0 for kPiece (tests cut small files into many pieces).
py::object parse_csv(py::bytes bytes, int64_t body, const std::string& delimiter, int64_t width,
                     const std::vector<int64_t>& numbers, int threads, int64_t piece) {
  char* start = nullptr;
  Py_ssize_t length = 0;
  if (PyBytes_AsStringAndSize(bytes.ptr(), &start, &length) != 0) throw py::error_already_set();
  const char* data = start;
  const int64_t size = length;
  if (delimiter.size() != 1 || delimiter[0] == ' ' || width < 1 || body < 0 || body > size ||
      std::memchr(data + body, '"', size - body))
    return py::none();
  Table table{data, delimiter[0], width, std::vector<int64_t>(width, -1), static_cast<int64_t>(numbers.size())};
  for (size_t i = 0; i < numbers.size(); ++i) {
    if (numbers[i] < 0 || numbers[i] >= width || table.slot[numbers[i]] >= 0) return py::none();
    table.slot[numbers[i]] = static_cast<int64_t>(i);
  }
  threads = std::max(threads, 1);

  // cuts after line ends, so that no row is split between pieces
  std::vector<int64_t> cuts{body};
  int64_t pieces = std::clamp<int64_t>((size - body) / (piece > 0 ? piece : kPiece), 1, kMostPieces);
  for (int64_t i = 1; i < pieces; ++i) {
    int64_t at = std::max(body + (size - body) * i / pieces, cuts.back());
    const char* newline = static_cast<const char*>(std::memchr(data + at, '\n', size - at));
    if (!newline) break;
    if (newline + 1 - data > cuts.back()) cuts.push_back(newline + 1 - data);
  }
  if (cuts.back() != size) cuts.push_back(size);
  pieces = static_cast<int64_t>(cuts.size()) - 1;

  std::vector<int64_t> first(pieces + 1, 0), rows(pieces, 0);
  {
    py::gil_scoped_release free;
    each_piece(pieces, threads, [&](int64_t i) { first[i + 1] = room(data + cuts[i], data + cuts[i + 1], table); });
  }
  for (int64_t i = 0; i < pieces; ++i) first[i + 1] += first[i];
  py::array_t<double> out(std::vector<py::ssize_t>{first[pieces], table.columns});
  double* values = out.mutable_data();
  std::atomic<bool> stop{false};
  {
    py::gil_scoped_release free;
    each_piece(pieces, threads, [&](int64_t i) {
      rows[i] = table.parse(cuts[i], cuts[i + 1], values + first[i] * table.columns, first[i + 1] - first[i], stop);
      if (rows[i] < 0) stop = true;
    });
  }
  if (stop) return py::none();
  // empty lines are no rows: close the gaps they left (rare; the rows move down in order)
  int64_t total = 0;
  for (int64_t i = 0; i < pieces; ++i) {
    if (total != first[i] && rows[i] > 0)
      std::memmove(values + total * table.columns, values + first[i] * table.columns,
                   sizeof(double) * rows[i] * table.columns);
    total += rows[i];
  }
  if (total == first[pieces]) return std::move(out);
  return out[py::slice(0, total, 1)].attr("copy")();   // (a copy: the room made for empty lines is let go)
}
