#pragma once
// A small hand-written SVG writer for grids of attention heatmaps, used by demo.cpp and
// tiny_lm/tiny_lm.cpp.
//
// One panel per head: query tokens down the left, key tokens across the top (rotated), each cell
// coloured by its weight on a viridis-like ramp over [0, 1]; a colour bar on the right. Each cell
// also carries a <title>, so hovering over it in a browser shows the exact weight.

#include <mha/types.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ostream>
#include <string>
#include <vector>

namespace svg {

/// One heatmap: `weights [L, S]` (rows: queries, columns: keys), in [0, 1].
struct Panel {
  std::string title;
  mha::Matrix<float> weights;
};

/// A row of panels under a heading.
struct PanelRow {
  std::string heading;
  std::vector<Panel> panels;
};

/// `t` in [0, 1] -> "#rrggbb" on a 9-stop approximation of matplotlib's viridis.
inline std::string viridis(double t) {
  static const unsigned char stops[9][3] = {
      {68, 1, 84},   {72, 40, 120},  {62, 73, 137},  {49, 104, 142}, {38, 130, 142},
      {31, 158, 137}, {53, 183, 121}, {109, 205, 89}, {253, 231, 37}};
  t = std::clamp(t, 0.0, 1.0) * 8.0;
  const int i = std::min(static_cast<int>(t), 7);
  const double f = t - i;
  char hex[8];
  int rgb[3];
  for (int c = 0; c < 3; ++c)
    rgb[c] = static_cast<int>(std::lround(stops[i][c] + f * (stops[i + 1][c] - stops[i][c])));
  std::snprintf(hex, sizeof hex, "#%02x%02x%02x", rgb[0], rgb[1], rgb[2]);
  return hex;
}

inline std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

inline std::string fixed(double x, int decimals = 2) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, x);
  return buf;
}

/// Layout in pixels.
struct Layout {
  int cell = 20;          // side of one heatmap cell
  int left_labels = 60;   // room for the query labels left of a map
  int top_labels = 58;    // room for the rotated key labels above a map
  int panel_title = 22;   // height of a panel title
  int panel_gap = 28;     // horizontal space between panels
  int row_heading = 30;   // height of a row heading
  int row_gap = 18;       // vertical space between rows
  int margin = 20;        // outer margin
  int header = 70;        // title and subtitle
  int bar_width = 16;     // colour bar
  int bar_room = 76;      // room right of the panels for the bar and its labels
  // A <title> per cell (hover shows the exact weight). Without them, cells the colour of weight 0
  // are left to the map's background: a figure of many large maps (tiny_lm draws 32) shrinks
  // several times and looks the same.
  bool cell_titles = true;
  // Without titles, weights below this are drawn as 0 (say so in the figure's subtitle).
  double min_weight = 0.0;
};

/// A heatmap with its labels and title; (x, y) is the top-left corner of the panel.
inline void write_panel(std::ostream& os, const Layout& lay, int x, int y, const Panel& panel,
                        const std::vector<std::string>& query_tokens,
                        const std::vector<std::string>& key_tokens) {
  const int map_x = x + lay.left_labels;
  const int map_y = y + lay.panel_title + lay.top_labels;
  const int L = static_cast<int>(panel.weights.rows()), S = static_cast<int>(panel.weights.cols());
  os << "  <text x=\"" << map_x + S * lay.cell / 2 << "\" y=\"" << y + 15
     << "\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\">" << escape(panel.title)
     << "</text>\n";
  for (int j = 0; j < S; ++j) {  // key labels, rotated, reading upwards from the map's top edge
    const int cx = map_x + j * lay.cell + lay.cell / 2 + 4, cy = map_y - 5;
    os << "  <text x=\"" << cx << "\" y=\"" << cy << "\" transform=\"rotate(-60 " << cx << ' ' << cy
       << ")\" font-size=\"11\">" << escape(key_tokens[j]) << "</text>\n";
  }
  for (int i = 0; i < L; ++i)  // query labels, right-aligned against the map
    os << "  <text x=\"" << map_x - 5 << "\" y=\"" << map_y + i * lay.cell + lay.cell / 2 + 4
       << "\" text-anchor=\"end\" font-size=\"11\">" << escape(query_tokens[i]) << "</text>\n";
  const std::string background = viridis(0.0);
  if (!lay.cell_titles)
    os << "  <rect x=\"" << map_x << "\" y=\"" << map_y << "\" width=\"" << S * lay.cell << "\" height=\""
       << L * lay.cell << "\" fill=\"" << background << "\"/>\n";
  for (int i = 0; i < L; ++i)
    for (int j = 0; j < S; ++j) {
      const double w = panel.weights(i, j);
      const std::string colour = viridis(w);
      if (lay.cell_titles) {
        os << "  <rect x=\"" << map_x + j * lay.cell << "\" y=\"" << map_y + i * lay.cell << "\" width=\""
           << lay.cell << "\" height=\"" << lay.cell << "\" fill=\"" << colour << "\"><title>"
           << escape(query_tokens[i]) << " -&gt; " << escape(key_tokens[j]) << ": " << fixed(w, 3)
           << "</title></rect>\n";
      } else if (colour != background && w >= lay.min_weight) {
        os << "  <rect x=\"" << map_x + j * lay.cell << "\" y=\"" << map_y + i * lay.cell << "\" width=\""
           << lay.cell << "\" height=\"" << lay.cell << "\" fill=\"" << colour << "\"/>\n";
      }
      if (w > 0.2 && w < 0.95)  // label the cells that are clearly neither off nor fully on
        os << "  <text x=\"" << map_x + j * lay.cell + lay.cell / 2 << "\" y=\""
           << map_y + i * lay.cell + lay.cell / 2 + 3 << "\" text-anchor=\"middle\" font-size=\"8\" fill=\""
           << (w > 0.6 ? "#222" : "#fff") << "\">" << fixed(w).substr(1) << "</text>\n";  // ".50"
    }
  os << "  <rect x=\"" << map_x << "\" y=\"" << map_y << "\" width=\"" << S * lay.cell << "\" height=\""
     << L * lay.cell << "\" fill=\"none\" stroke=\"#444\" stroke-width=\"1\"/>\n";
}

/// A vertical colour bar for [0, 1] at (x, y), `height` pixels tall, ticks every 0.25.
inline void write_colour_bar(std::ostream& os, const Layout& lay, int x, int y, int height) {
  os << "  <defs><linearGradient id=\"ramp\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">\n";
  for (int k = 0; k <= 16; ++k)
    os << "    <stop offset=\"" << fixed(k / 16.0, 4) << "\" stop-color=\"" << viridis(k / 16.0) << "\"/>\n";
  os << "  </linearGradient></defs>\n";
  os << "  <text x=\"" << x + lay.bar_width / 2 << "\" y=\"" << y - 10
     << "\" text-anchor=\"middle\" font-size=\"12\">weight</text>\n";
  os << "  <rect x=\"" << x << "\" y=\"" << y << "\" width=\"" << lay.bar_width << "\" height=\"" << height
     << "\" fill=\"url(#ramp)\" stroke=\"#444\" stroke-width=\"1\"/>\n";
  for (int k = 0; k <= 4; ++k) {
    const int ty = y + height - k * height / 4;
    os << "  <line x1=\"" << x + lay.bar_width << "\" y1=\"" << ty << "\" x2=\"" << x + lay.bar_width + 4
       << "\" y2=\"" << ty << "\" stroke=\"#444\"/>\n";
    os << "  <text x=\"" << x + lay.bar_width + 7 << "\" y=\"" << ty + 4 << "\" font-size=\"11\">"
       << fixed(k / 4.0) << "</text>\n";
  }
}

/// The whole figure: a title, a subtitle, rows of panels and a colour bar.
inline void write_figure(std::ostream& os, const std::string& title, const std::string& subtitle,
                         const std::vector<PanelRow>& rows, const std::vector<std::string>& tokens,
                         const Layout& lay = Layout()) {
  std::size_t columns = 0;
  for (const PanelRow& r : rows) columns = std::max(columns, r.panels.size());
  const int L = static_cast<int>(tokens.size());
  const int panel_w = lay.left_labels + L * lay.cell;
  const int panel_h = lay.panel_title + lay.top_labels + L * lay.cell;
  const int row_h = lay.row_heading + panel_h;
  const int nrows = static_cast<int>(rows.size());
  const int width = 2 * lay.margin + static_cast<int>(columns) * (panel_w + lay.panel_gap) + lay.bar_room;
  const int height = 2 * lay.margin + lay.header + nrows * row_h + (nrows - 1) * lay.row_gap;

  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
     << "\" viewBox=\"0 0 " << width << ' ' << height
     << "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" fill=\"#222\">\n";
  os << "  <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  os << "  <text x=\"" << lay.margin << "\" y=\"" << lay.margin + 18
     << "\" font-size=\"20\" font-weight=\"bold\">" << escape(title) << "</text>\n";
  os << "  <text x=\"" << lay.margin << "\" y=\"" << lay.margin + 42 << "\" font-size=\"13\" fill=\"#555\">"
     << escape(subtitle) << "</text>\n";
  int y = lay.margin + lay.header;
  for (const PanelRow& r : rows) {
    os << "  <text x=\"" << lay.margin << "\" y=\"" << y + 18 << "\" font-size=\"15\" fill=\"#333\">"
       << escape(r.heading) << "</text>\n";
    os << "  <line x1=\"" << lay.margin << "\" y1=\"" << y + 25 << "\" x2=\""
       << width - lay.margin - lay.bar_room << "\" y2=\"" << y + 25 << "\" stroke=\"#ccc\"/>\n";
    int x = lay.margin;
    for (const Panel& p : r.panels) {
      write_panel(os, lay, x, y + lay.row_heading, p, tokens, tokens);
      x += panel_w + lay.panel_gap;
    }
    y += row_h + lay.row_gap;
  }
  const int bar_top = lay.margin + lay.header + lay.row_heading + lay.panel_title + lay.top_labels;
  const int bar_bottom = y - lay.row_gap;
  write_colour_bar(os, lay, width - lay.margin - lay.bar_room + 24, bar_top, bar_bottom - bar_top);
  os << "</svg>\n";
}

}  // namespace svg
