package config

import (
	"fmt"
	"strconv"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/prometheus/common/model"
)

// kingpin's own Duration and Int values report "time: invalid duration"
// without saying which flag was wrong; these name it.

type durationValue struct {
	flag string
	dst  *time.Duration
}

func (v *durationValue) Set(s string) error {
	d, err := model.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("--%s: invalid duration %q (examples: 500ms, 30s, 5m, 1h)", v.flag, s)
	}
	*v.dst = time.Duration(d)
	return nil
}

func (v *durationValue) String() string { return model.Duration(*v.dst).String() }

type intValue struct {
	flag string
	dst  *int
}

func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("--%s: %q is not a whole number", v.flag, s)
	}
	*v.dst = n
	return nil
}

func (v *intValue) String() string { return strconv.Itoa(*v.dst) }

func durationFlag(c *kingpin.FlagClause, name string, def time.Duration) *time.Duration {
	d := new(time.Duration)
	c.Default(model.Duration(def).String()).SetValue(&durationValue{flag: name, dst: d})
	return d
}

func intFlag(c *kingpin.FlagClause, name string, def int) *int {
	n := new(int)
	c.Default(strconv.Itoa(def)).SetValue(&intValue{flag: name, dst: n})
	return n
}

// goDurationValue is durationValue with Go's syntax (1.5s, 1h30m), for the
// flags that have always taken it.
type goDurationValue struct {
	flag string
	dst  *time.Duration
}

func (v *goDurationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return fieldErr(v.flag, "invalid duration %q (examples: 500ms, 1.5s, 5m)", s)
	}
	*v.dst = d
	return nil
}

func (v *goDurationValue) String() string { return v.dst.String() }

func goDurationFlag(c *kingpin.FlagClause, name string, def time.Duration) *time.Duration {
	d := new(time.Duration)
	c.Default(def.String()).SetValue(&goDurationValue{flag: name, dst: d})
	return d
}
