package db

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"

	// Registers the "pgx" database/sql driver that goose runs migrations through.
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// migrationLockID is the PostgreSQL advisory lock held while migrating, so that control-plane replicas
// starting together apply each migration once. Advisory locks are per database.
const migrationLockID int64 = 5_837_104_211

// Migrate brings the database at databaseURL up to the newest migration in Migrations, recording applied
// versions in goose's own table (goose_db_version). It is idempotent: an up-to-date database is left as is.
// Concurrent callers against the same database serialise on a session advisory lock; the later caller finds
// nothing left to apply.
func Migrate(ctx context.Context, databaseURL string) error {
	sqlDB, err := sql.Open("pgx", databaseURL)
	if err != nil {
		return fmt.Errorf("migrate: open database: %w", err)
	}
	defer sqlDB.Close()

	migrations, err := fs.Sub(Migrations, "migrations")
	if err != nil {
		return fmt.Errorf("migrate: migrations folder: %w", err)
	}
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(migrationLockID))
	if err != nil {
		return fmt.Errorf("migrate: session locker: %w", err)
	}
	provider, err := goose.NewProvider(goose.DialectPostgres, sqlDB, migrations,
		goose.WithSessionLocker(locker),
		// Only the embedded SQL files count: Go migrations registered globally by some other package must
		// never run against PDS's schema.
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		return fmt.Errorf("migrate: goose provider: %w", err)
	}
	if _, err := provider.Up(ctx); err != nil {
		return fmt.Errorf("migrate: apply migrations: %w", err)
	}
	return nil
}
