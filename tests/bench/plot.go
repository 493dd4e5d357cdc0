package main

import (
	"fmt"
	"image/color"
	"slices"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// plotLatency writes a CDF of STORE->visible latency per system and mailbox
// size, on a log time axis: solid lines read the replica's cyrus.index,
// dashed lines poll the replica over IMAP.
func plotLatency(file string, results []*replResult) error {
	p := plot.New()
	p.Title.Text = "STORE -> visible on the replica (one \\Seen change)"
	p.X.Label.Text = "latency, ms (log scale)"
	p.Y.Label.Text = "fraction of changes visible"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Min, p.Y.Max = 0, 1
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.XOffs = vg.Points(8)
	p.Legend.YOffs = vg.Points(-8)
	p.X.Min, p.X.Max = 0.1, 10000
	palette := map[string][]color.Color{
		"indexwire":          {color.RGBA{0, 114, 178, 255}, color.RGBA{86, 180, 233, 255}, color.RGBA{0, 60, 100, 255}},
		"Cyrus rolling sync": {color.RGBA{213, 94, 0, 255}, color.RGBA{230, 159, 0, 255}, color.RGBA{120, 40, 0, 255}},
	}
	sizes := []int{}
	for _, r := range results {
		if !slices.Contains(sizes, r.n) {
			sizes = append(sizes, r.n)
		}
	}
	for _, r := range results {
		c := palette[r.sys.name][slices.Index(sizes, r.n)%3]
		for k, lat := range [][]time.Duration{r.sys.fileLat, r.sys.imapLat} {
			if len(lat) == 0 {
				continue
			}
			s := slices.Clone(lat)
			slices.Sort(s)
			pts := make(plotter.XYs, len(s))
			for i, d := range s {
				pts[i].X = max(float64(d)/float64(time.Millisecond), 0.01)
				pts[i].Y = float64(i+1) / float64(len(s))
			}
			l, err := plotter.NewLine(pts)
			if err != nil {
				return err
			}
			l.Color = c
			l.Width = vg.Points(1.6)
			how := "file"
			if k == 1 {
				how = "IMAP"
				l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
			}
			p.Add(l)
			p.Legend.Add(fmt.Sprintf("%s N=%d (%s)", r.sys.name, r.n, how), l)
		}
	}
	for _, r := range results { // keep every point on the axis
		for _, d := range append(slices.Clone(r.sys.fileLat), r.sys.imapLat...) {
			p.X.Max = max(p.X.Max, 2*float64(d)/float64(time.Millisecond))
		}
	}
	p.Legend.ThumbnailWidth = vg.Points(24)
	p.Legend.TextStyle.Font.Size = vg.Points(9)
	return p.Save(10*vg.Inch, 6*vg.Inch, file)
}
