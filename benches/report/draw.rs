//! Draws a [`Chart`] as SVG text with `plotters`.
//!
//! Every axis is drawn as a linear `f64` axis with key points chosen here: a log axis carries
//! log10 of the values and is labelled with the values themselves at each decade, an ordinal axis
//! carries the category's index and is labelled with its name. One coordinate type for every
//! plot keeps this file free of plotters' per-scale types. Text is left to the SVG viewer
//! (plotters' font features are off, so no font is read at build or run time); its size is
//! estimated for the layout only.

use anyhow::anyhow;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::charts::{Chart, Kind, Line, Scale};

const WIDTH: u32 = 820;
const HEIGHT: u32 = 480;

/// The SVG text of a chart.
pub(crate) fn svg(chart: &Chart) -> anyhow::Result<String> {
    let xs: Vec<f64> = chart
        .lines
        .iter()
        .flat_map(|line| line.points.iter().map(|p| p.0))
        .collect();
    let ys: Vec<f64> = chart
        .lines
        .iter()
        .flat_map(|line| line.points.iter().map(|p| p.1))
        .collect();
    let x_axis = Axis::new(chart.x_scale, &xs, chart.categories.len(), false, 0.0);
    let y_axis = Axis::new(
        chart.y_scale,
        &ys,
        0,
        chart.kind == Kind::Bars,
        legend_share(chart.lines.len()),
    );

    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let mut context = ChartBuilder::on(&root)
            .caption(&chart.title, ("sans-serif", 18))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(x_axis.range(), y_axis.range())
            .map_err(plot_error)?;
        let x_format = |value: &f64| x_axis.label(*value, &chart.categories);
        let y_format = |value: &f64| y_axis.label(*value, &[]);
        context
            .configure_mesh()
            .x_desc(chart.x_label.as_str())
            .y_desc(chart.y_label.as_str())
            .x_label_formatter(&x_format)
            .y_label_formatter(&y_format)
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(plot_error)?;

        let bars = chart.lines.len().max(1) as f64;
        for (index, line) in chart.lines.iter().enumerate() {
            let color = color_of(line);
            let points: Vec<(f64, f64)> = line
                .points
                .iter()
                .map(|&(x, y)| (x_axis.place(x), y_axis.place(y)))
                .collect();
            match chart.kind {
                Kind::Lines => {
                    context
                        .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                        .map_err(plot_error)?
                        .label(line.name.as_str())
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                        });
                    // Circle, triangle or cross by the line's variant, so that lines of one
                    // colour still tell apart.
                    match line.variant % 3 {
                        0 => context.draw_series(
                            points
                                .iter()
                                .map(|&point| Circle::new(point, 4, color.filled())),
                        ),
                        1 => context.draw_series(
                            points
                                .iter()
                                .map(|&point| TriangleMarker::new(point, 5, color.filled())),
                        ),
                        _ => context.draw_series(
                            points
                                .iter()
                                .map(|&point| Cross::new(point, 4, color.stroke_width(2))),
                        ),
                    }
                    .map_err(plot_error)?;
                }
                Kind::Bars => {
                    // Bars of one category side by side, 80% of the category's width in all.
                    let width = 0.8 / bars;
                    let bottom = y_axis.low;
                    context
                        .draw_series(points.iter().map(|&(x, y)| {
                            let left = x - 0.4 + index as f64 * width;
                            Rectangle::new(
                                [(left, bottom), (left + width * 0.9, y)],
                                color.filled(),
                            )
                        }))
                        .map_err(plot_error)?
                        .label(line.name.as_str())
                        .legend(move |(x, y)| {
                            Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                        });
                }
            }
        }
        context
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .label_font(("sans-serif", 12))
            .draw()
            .map_err(plot_error)?;
        root.present().map_err(plot_error)?;
    }
    Ok(text)
}

fn plot_error<E: std::fmt::Debug>(error: E) -> anyhow::Error {
    anyhow!("drawing the plot: {error:?}")
}

/// One axis: its range and key points in drawing space, and how values map into it.
#[derive(Debug)]
struct Axis {
    scale: Scale,
    low: f64,
    high: f64,
    bold: Vec<f64>,
    light: Vec<f64>,
}

impl Axis {
    /// An axis over `values` (data space). `count` is the number of categories of an ordinal
    /// axis; `from_zero` starts a linear axis at 0 (and a log axis a decade lower, for bars);
    /// `headroom` is the share of the axis, at its top, left free of data for the legend.
    fn new(scale: Scale, values: &[f64], count: usize, from_zero: bool, headroom: f64) -> Axis {
        match scale {
            Scale::Ordinal => Axis {
                scale,
                low: -0.5,
                high: count.max(1) as f64 - 0.5,
                bold: (0..count).map(|i| i as f64).collect(),
                light: Vec::new(),
            },
            Scale::Log => {
                let logs: Vec<f64> = values.iter().map(|v| v.log10()).collect();
                let (min, max) = bounds(&logs, (0.0, 1.0));
                let mut low = min.floor();
                let mut high = max.ceil();
                if from_zero || high - low < 1.0 {
                    low -= 1.0;
                }
                if high <= low {
                    high = low + 1.0;
                }
                if headroom > 0.0 {
                    high = with_headroom(low, high, headroom).ceil();
                }
                let decades: Vec<f64> = float_steps(low.floor(), high, 1.0);
                // An x axis with a few distinct values (clients 1, 16, 64, 256) is labelled at
                // those values, and spans them with a margin: decades would leave most points
                // unlabelled.
                let mut distinct = logs.clone();
                distinct.sort_by(f64::total_cmp);
                distinct.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
                let labelled = headroom == 0.0 && distinct.len() <= 8;
                if labelled {
                    let margin = ((max - min) * 0.04).max(0.05);
                    low = min - margin;
                    high = max + margin;
                }
                let light = decades
                    .iter()
                    .flat_map(|d| (1u8..10).map(move |k| d + f64::from(k).log10()))
                    .filter(|v| *v >= low && *v <= high)
                    .collect();
                let bold = if labelled { distinct } else { decades };
                Axis {
                    scale,
                    low,
                    high,
                    bold,
                    light,
                }
            }
            Scale::Linear => {
                let (min, max) = bounds(values, (0.0, 1.0));
                let low = if from_zero || min >= 0.0 { 0.0 } else { min };
                let mut high = if headroom > 0.0 {
                    with_headroom(low, max, headroom)
                } else {
                    max * 1.05
                };
                if high <= low {
                    high = low + 1.0;
                }
                let step = nice_step((high - low) / 6.0);
                let first = (low / step).ceil() * step;
                Axis {
                    scale,
                    low,
                    high,
                    bold: float_steps(first, high, step),
                    light: Vec::new(),
                }
            }
        }
    }

    fn range(&self) -> Keyed {
        Keyed {
            inner: (self.low..self.high).into(),
            bold: self.bold.clone(),
            light: self.light.clone(),
        }
    }

    /// A value's place on the drawing axis.
    fn place(&self, value: f64) -> f64 {
        match self.scale {
            Scale::Log => value.log10(),
            Scale::Linear | Scale::Ordinal => value,
        }
    }

    /// The label at a key point.
    fn label(&self, at: f64, categories: &[String]) -> String {
        match self.scale {
            Scale::Ordinal => {
                let index = at.round();
                if (at - index).abs() > 1e-6 || index < 0.0 {
                    return String::new();
                }
                categories
                    .iter()
                    .zip(0u32..)
                    .find(|(_, i)| (f64::from(*i) - index).abs() < 0.5)
                    .map(|(name, _)| name.clone())
                    .unwrap_or_default()
            }
            Scale::Log => short_number(10f64.powf(at)),
            Scale::Linear => short_number(at),
        }
    }
}

/// A linear `f64` coordinate with the key points chosen here. plotters' own `WithKeyPoints`
/// over `RangedCoordf64` keeps that type's "no default formatting", which the mesh then refuses
/// even with label formatters given.
#[derive(Clone)]
struct Keyed {
    inner: RangedCoordf64,
    bold: Vec<f64>,
    light: Vec<f64>,
}

impl Ranged for Keyed {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.light.clone()
        } else {
            self.bold.clone()
        }
    }
}

/// The share of the plotting area's height the legend takes, with a margin: one row of text per
/// line, in the upper right corner.
fn legend_share(lines: usize) -> f64 {
    // The plotting area is the image less the margins, the caption and the x labels.
    let plot_height = f64::from(HEIGHT) - 2.0 * 14.0 - 28.0 - 44.0;
    let legend_height = 17.0 * lines.max(1) as f64 + 24.0;
    (legend_height / plot_height).clamp(0.25, 0.75)
}

/// The top of an axis from `low` whose data reach `max`, so that the top `share` of it is free.
fn with_headroom(low: f64, max: f64, share: f64) -> f64 {
    (max - share * low) / (1.0 - share)
}

/// `1`, `10`, `1k`, `2.5k`, `1M`, `0.01`: an axis label.
fn short_number(value: f64) -> String {
    let magnitude = value.abs();
    let (scaled, suffix) = if magnitude >= 1e6 {
        (value / 1e6, "M")
    } else if magnitude >= 1e3 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let text = if (scaled - scaled.round()).abs() < 1e-9 * scaled.abs().max(1.0) {
        format!("{scaled:.0}")
    } else if scaled.abs() >= 1.0 {
        format!("{scaled:.1}")
    } else {
        let text = format!("{scaled:.3}");
        text.trim_end_matches('0').to_owned()
    };
    format!("{text}{suffix}")
}

fn bounds(values: &[f64], empty: (f64, f64)) -> (f64, f64) {
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let min = finite.clone().fold(f64::INFINITY, f64::min);
    let max = finite.fold(f64::NEG_INFINITY, f64::max);
    if min.is_finite() { (min, max) } else { empty }
}

/// `from`, `from + step`, … up to `to` (inclusive, with rounding slack).
fn float_steps(from: f64, to: f64, step: f64) -> Vec<f64> {
    let mut steps = Vec::new();
    let mut k = 0.0;
    loop {
        let value = from + k * step;
        if value > to + step * 1e-9 || steps.len() > 100 {
            return steps;
        }
        steps.push(value);
        k += 1.0;
    }
}

/// A step of 1, 2 or 5 times a power of ten, near `rough`.
fn nice_step(rough: f64) -> f64 {
    if !rough.is_finite() || rough <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(rough.log10().floor());
    let fraction = rough / power;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * power
}

/// gradata blue, the limit grey, the original orange, others green; a series' later lines in
/// lighter shades of its colour.
fn color_of(line: &Line) -> RGBColor {
    let base: (u8, u8, u8) = match line.series.as_str() {
        "gradata" => (31, 90, 180),
        "limit" => (90, 90, 90),
        "original" => (220, 110, 20),
        _ => (40, 150, 70),
    };
    let shades = [0u8, 45, 80, 105, 125];
    let lift = u16::from(shades[line.variant % shades.len()]);
    let mix = |channel: u8| -> u8 {
        let channel = u16::from(channel);
        let lifted = channel + (255 - channel) * lift / 255;
        u8::try_from(lifted).unwrap_or(u8::MAX)
    };
    RGBColor(mix(base.0), mix(base.1), mix(base.2))
}
