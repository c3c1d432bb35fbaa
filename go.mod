module github.com/meshcast/meshcast

go 1.26.0

require (
	github.com/VictoriaMetrics/metrics v1.44.0
	github.com/gobwas/ws v1.5.0
	github.com/golang-jwt/jwt/v5 v5.3.1
	golang.org/x/time v0.16.0
)

require (
	github.com/gobwas/httphead v0.1.0 // indirect
	github.com/valyala/fastrand v1.1.0 // indirect
	github.com/valyala/histogram v1.2.0 // indirect
	golang.org/x/sys v0.38.0 // indirect
)
