// Package systemtest holds the whole-program suites: each test starts the
// real program through cli.Run (or builds its binary or container image)
// and drives it over HTTP, with real Redis and PostgreSQL where it needs
// them and the fakes of internal/testkit in front of them and of the
// model. Faults, replicas, outages, round trips, tracing and the
// deployment files are checked here; each package's own tests check its
// parts.
//
// It has no code outside its tests.
package systemtest
