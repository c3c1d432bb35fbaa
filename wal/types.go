package wal

import (
	"context"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
)

// class says how a column's values become JSON and how filters compare
// them. The numbers are part of the mesh encoding of a Column.
type class uint8

const (
	classOther       class = iota // any other type: a JSON string of its text, equality by text
	classText                     // text, varchar, name, citext: string, ordered by bytes
	classBpchar                   // char(n): string; compares without trailing spaces
	classInt                      // int2, int4, int8: number
	classFloat                    // float8: number, or "NaN"/"Infinity"/"-Infinity"
	classFloat4                   // float4: as float8, but filter values round to float4
	classNumeric                  // numeric: number, or "NaN"/"Infinity"/"-Infinity"
	classBool                     // boolean
	classJSON                     // json: embedded, no equality (Postgres has none)
	classJSONB                    // jsonb: embedded, equality by canonical text
	classDate                     // date: "2024-05-01"
	classTimestamp                // timestamp: "2024-05-01T10:00:00.123456"
	classTimestampTZ              // timestamptz: "2024-05-01T10:00:00.123456+00:00"
	classTime                     // time: "10:00:00"
	classTimeTZ                   // timetz: "10:00:00+02"
	classInterval                 // interval: "1 day 02:00:00"
	classUUID                     // uuid
	classBytea                    // bytea: "\\x0102"
	classEnum                     // an enum: its label; equality only
	classArray                    // an array: a JSON array of its elements
	classComposite                // a row type: a JSON object of its fields
	numClasses
)

// typeInfo is what decoding needs of a Postgres type.
type typeInfo struct {
	oid    uint32
	name   string // pg_type.typname: what clients see in columns
	class  class  // of the base type for domains
	elem   *typeInfo
	delim  byte // array element delimiter
	fields []field
}

type field struct {
	name string
	typ  *typeInfo
}

// Builtin type OIDs, fixed by Postgres (pg_type.dat).
const (
	oidBool        = 16
	oidBytea       = 17
	oidChar        = 18
	oidName        = 19
	oidInt8        = 20
	oidInt2        = 21
	oidInt2Vector  = 22
	oidInt4        = 23
	oidText        = 25
	oidOID         = 26
	oidOIDVector   = 30
	oidJSON        = 114
	oidFloat4      = 700
	oidFloat8      = 701
	oidBpchar      = 1042
	oidVarchar     = 1043
	oidDate        = 1082
	oidTime        = 1083
	oidTimestamp   = 1114
	oidTimestampTZ = 1184
	oidInterval    = 1186
	oidTimeTZ      = 1266
	oidNumeric     = 1700
	oidUUID        = 2950
	oidJSONB       = 3802
)

// builtinTypes are decoded without asking Postgres; everything else (enums,
// domains, arrays, composites, extension types) is looked up in pg_type.
var builtinTypes = func() map[uint32]*typeInfo {
	m := map[uint32]*typeInfo{}
	add := func(oid uint32, name string, c class, arrayOID uint32) {
		t := &typeInfo{oid: oid, name: name, class: c}
		m[oid] = t
		if arrayOID != 0 {
			m[arrayOID] = &typeInfo{oid: arrayOID, name: "_" + name, class: classArray, elem: t, delim: ','}
		}
	}
	add(oidBool, "bool", classBool, 1000)
	add(oidBytea, "bytea", classBytea, 1001)
	add(oidChar, "char", classText, 1002)
	add(oidName, "name", classText, 1003)
	add(oidInt8, "int8", classInt, 1016)
	add(oidInt2, "int2", classInt, 1005)
	add(oidInt4, "int4", classInt, 1007)
	add(oidText, "text", classText, 1009)
	add(oidOID, "oid", classOther, 1028)
	add(oidJSON, "json", classJSON, 199)
	add(oidFloat4, "float4", classFloat4, 1021)
	add(oidFloat8, "float8", classFloat, 1022)
	add(oidBpchar, "bpchar", classBpchar, 1014)
	add(oidVarchar, "varchar", classText, 1015)
	add(oidDate, "date", classDate, 1182)
	add(oidTime, "time", classTime, 1183)
	add(oidTimestamp, "timestamp", classTimestamp, 1115)
	add(oidTimestampTZ, "timestamptz", classTimestampTZ, 1185)
	add(oidInterval, "interval", classInterval, 1187)
	add(oidTimeTZ, "timetz", classTimeTZ, 1270)
	add(oidNumeric, "numeric", classNumeric, 1231)
	add(oidUUID, "uuid", classUUID, 2951)
	add(oidJSONB, "jsonb", classJSONB, 3807)
	// Vectors print as space-separated lists; to_jsonb makes arrays of them.
	m[oidInt2Vector] = &typeInfo{oid: oidInt2Vector, name: "int2vector", class: classArray, elem: m[oidInt2], delim: ' '}
	m[oidOIDVector] = &typeInfo{oid: oidOIDVector, name: "oidvector", class: classArray, elem: m[oidOID], delim: ' '}
	return m
}()

// typeCache resolves type OIDs, asking Postgres (over an ordinary
// connection) for the types it has not seen. It is used by one goroutine at
// a time, under its mutex.
type typeCache struct {
	mu    sync.Mutex
	types map[uint32]*typeInfo
}

func newTypeCache() *typeCache {
	return &typeCache{types: map[uint32]*typeInfo{}}
}

// querier is the part of *pgx.Conn the cache needs.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// forget drops oid, so that the next lookup asks Postgres again: pgoutput
// sends a Type message when a type may have changed.
func (c *typeCache) forget(oid uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.types, oid)
}

// resolve returns the types of oids in order.
func (c *typeCache) resolve(ctx context.Context, q querier, oids []uint32) ([]*typeInfo, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.load(ctx, q, oids, 0); err != nil {
		return nil, err
	}
	out := make([]*typeInfo, len(oids))
	for i, oid := range oids {
		out[i] = c.lookup(oid)
	}
	return out, nil
}

func (c *typeCache) lookup(oid uint32) *typeInfo {
	if t, ok := builtinTypes[oid]; ok {
		return t
	}
	return c.types[oid]
}

// pgType is a pg_type row and, for a composite, its attributes.
type pgType struct {
	oid, elem, base   uint32
	name              string
	typtype, category byte
	delim             byte
	fieldNames        []string
	fieldTypes        []uint32
}

const typeQuery = `
SELECT t.oid, t.typname, t.typtype, t.typcategory, t.typdelim, t.typelem, t.typbasetype,
	coalesce(array_agg(a.attname ORDER BY a.attnum) FILTER (WHERE a.attname IS NOT NULL), '{}'),
	coalesce(array_agg(a.atttypid ORDER BY a.attnum) FILTER (WHERE a.attname IS NOT NULL), '{}')
FROM pg_catalog.pg_type t
LEFT JOIN pg_catalog.pg_attribute a
	ON t.typtype = 'c' AND a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
WHERE t.oid = ANY($1)
GROUP BY t.oid`

// load makes sure every oid, and every type they are made of, is cached.
func (c *typeCache) load(ctx context.Context, q querier, oids []uint32, depth int) error {
	var missing []uint32
	for _, oid := range oids {
		if c.lookup(oid) == nil && !contains(missing, oid) {
			missing = append(missing, oid)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if depth > 8 {
		return fmt.Errorf("types %v nest too deep", missing)
	}
	rows, err := q.Query(ctx, typeQuery, missing)
	if err != nil {
		return fmt.Errorf("look up types %v: %w", missing, err)
	}
	var found []pgType
	for rows.Next() {
		var t pgType
		var typtype, category, delim string
		if err := rows.Scan(&t.oid, &t.name, &typtype, &category, &delim, &t.elem, &t.base,
			&t.fieldNames, &t.fieldTypes); err != nil {
			rows.Close()
			return fmt.Errorf("look up types %v: %w", missing, err)
		}
		t.typtype, t.category, t.delim = first(typtype), first(category), first(delim)
		found = append(found, t)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("look up types %v: %w", missing, err)
	}
	// The types these are made of come first.
	var parts []uint32
	for _, t := range found {
		switch {
		case t.typtype == 'd':
			parts = append(parts, t.base)
		case t.category == 'A' && t.elem != 0:
			parts = append(parts, t.elem)
		case t.typtype == 'c':
			parts = append(parts, t.fieldTypes...)
		}
	}
	if err := c.load(ctx, q, parts, depth+1); err != nil {
		return err
	}
	for _, t := range found {
		c.types[t.oid] = c.build(t)
	}
	for _, oid := range missing {
		if c.types[oid] == nil {
			// Dropped meanwhile: decode its values as text.
			c.types[oid] = &typeInfo{oid: oid, name: fmt.Sprint(oid), class: classOther}
		}
	}
	return nil
}

func (c *typeCache) build(t pgType) *typeInfo {
	info := &typeInfo{oid: t.oid, name: t.name, class: classOther, delim: t.delim}
	switch {
	case t.typtype == 'd':
		// A domain is its base type under its own name.
		base := c.lookup(t.base)
		info.class, info.elem, info.delim, info.fields = base.class, base.elem, base.delim, base.fields
	case t.typtype == 'e':
		info.class = classEnum
	case t.category == 'A' && t.elem != 0:
		info.class, info.elem = classArray, c.lookup(t.elem)
	case t.typtype == 'c':
		info.class = classComposite
		for i, name := range t.fieldNames {
			info.fields = append(info.fields, field{name: name, typ: c.lookup(t.fieldTypes[i])})
		}
	case t.name == "citext":
		info.class = classText
	}
	if info.delim == 0 {
		info.delim = ','
	}
	return info
}

func first(s string) byte {
	if s == "" {
		return 0
	}
	return s[0]
}

func contains(s []uint32, v uint32) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

const primaryKeyQuery = `
SELECT a.attname FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
WHERE i.indrelid = $1 AND i.indisprimary`

// relation resolves what a Relation message does not say: its column types
// and its primary key.
func (c *typeCache) relation(ctx context.Context, q querier, m msgRelation) (*relation, error) {
	oids := make([]uint32, len(m.columns))
	for i, col := range m.columns {
		oids[i] = col.oid
	}
	types, err := c.resolve(ctx, q, oids)
	if err != nil {
		return nil, err
	}
	rows, err := q.Query(ctx, primaryKeyQuery, m.id)
	if err != nil {
		return nil, fmt.Errorf("primary key of %s.%s: %w", m.schema, m.name, err)
	}
	pk, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("primary key of %s.%s: %w", m.schema, m.name, err)
	}
	return newRelation(m, types, pk), nil
}
