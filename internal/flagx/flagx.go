// Package flagx holds the flag.Value the packages register their limits
// with. It exists for one rule, the same in edge, mesh and wal: in a
// Config struct a field's zero value means its default and a negative
// value turns a limit off (as quic-go's Config does), while on the command
// line, where the default is already shown, 0 turns a limit off. Limit
// and DurationLimit translate: 0 on the command line is stored as -1.
package flagx

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"time"
)

// Number is the type of a numeric limit.
type Number interface{ ~int | ~int64 | ~float64 }

// Limit registers a flag for the limit *p: 0 (or a negative value) on
// the command line stores -1, which turns it off; its default is *p.
func Limit[T Number](fs *flag.FlagSet, p *T, name, usage string) {
	fs.Var(&limit[T]{p}, name, usage)
}

// DurationLimit is Limit for a time limit (a timeout).
func DurationLimit(fs *flag.FlagSet, p *time.Duration, name, usage string) {
	fs.Var(&limit[time.Duration]{p}, name, usage)
}

type limit[T Number] struct{ p *T }

// Get is the value as the command line sees it: 0 when the limit is off.
func (l *limit[T]) Get() any {
	if l.p == nil || *l.p < 0 {
		var zero T
		return zero
	}
	return *l.p
}

func (l *limit[T]) String() string {
	if l.p == nil {
		return "0"
	}
	switch v := l.Get().(type) {
	case time.Duration:
		return v.String()
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	default:
		return fmt.Sprint(v)
	}
}

func (l *limit[T]) Set(s string) error {
	var v T
	var err error
	switch p := any(&v).(type) {
	case *time.Duration:
		*p, err = time.ParseDuration(s)
	case *float64:
		*p, err = strconv.ParseFloat(s, 64)
	default:
		var n int64
		n, err = strconv.ParseInt(s, 0, 64)
		v = T(n)
	}
	if err != nil {
		// The flag package's own words, which the callers explain.
		if errors.Is(err, strconv.ErrRange) {
			return errors.New("value out of range")
		}
		return errors.New("parse error")
	}
	if v <= 0 {
		v = -1
	}
	*l.p = v
	return nil
}
