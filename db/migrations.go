// Package db holds PDS's PostgreSQL schema: the migrations, applied with goose, and the sqlc queries whose
// generated code lives in db/sqlcdb.
package db

import "embed"

// Migrations are the goose migrations, in the folder "migrations".
//
//go:embed migrations/*.sql
var Migrations embed.FS
