package wal

import (
	"reflect"
	"testing"
)

// TestReaderCloneCopiesEveryOption: the Service reads with its own copy of
// the caller's Reader, so an option clone forgets is silently ignored (as
// Broadcasts once was: the node then streamed no realtime.messages rows).
// Options of kinds set here are checked; funcs, pointers and interfaces
// are not.
func TestReaderCloneCopiesEveryOption(t *testing.T) {
	var r Reader
	v := reflect.ValueOf(&r).Elem()
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		if !v.Type().Field(i).IsExported() {
			continue
		}
		switch f.Kind() {
		case reflect.String:
			f.SetString("x")
		case reflect.Int, reflect.Int64:
			f.SetInt(7)
		case reflect.Bool:
			f.SetBool(true)
		}
	}
	c := reflect.ValueOf(r.clone()).Elem()
	for i := 0; i < v.NumField(); i++ {
		name := v.Type().Field(i).Name
		if !v.Type().Field(i).IsExported() || v.Field(i).IsZero() {
			continue
		}
		if !reflect.DeepEqual(v.Field(i).Interface(), c.Field(i).Interface()) {
			t.Errorf("clone does not copy Reader.%s", name)
		}
	}
}
