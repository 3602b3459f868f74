package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pds-platform/pds/common/freeport"
)

// startTimeout bounds initdb plus the wait for the server to accept connections.
const startTimeout = 2 * time.Minute

// server is the PostgreSQL the test process creates its databases in.
type server struct {
	adminURL string
	// The fields below are zero for an external server (PDS_TEST_DATABASE_URL), which is never stopped.
	dir    string
	cmd    *exec.Cmd
	exited chan struct{}
	// owner holds an exclusive lock on the folder's owner file while this process uses the folder.
	owner *os.File
}

// dirPrefix names the temporary folders of private servers.
const dirPrefix = "pds-pgtest-"

// ownerFile, inside a server folder, is locked (flock) by the test process using the folder. The kernel
// drops the lock when that process dies however it dies, which is how a later run knows the folder is
// abandoned.
const ownerFile = ".owner"

func claimDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, ownerFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("pgtest: owner file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("pgtest: lock owner file: %w", err)
	}
	return f, nil
}

// removeStaleDirs deletes the folders of private servers whose test process died without pgtest.Main
// cleaning up (a panic or a kill; the server itself died with its process). A folder whose owner file is
// still locked belongs to a running test process and is left alone.
func removeStaleDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, dir := range dirs {
		f, err := os.OpenFile(filepath.Join(dir, ownerFile), os.O_RDWR, 0)
		if err != nil {
			// No owner file yet: another process may be between creating the folder and locking it.
			if info, statErr := os.Stat(dir); statErr == nil && time.Since(info.ModTime()) > time.Hour {
				_ = os.RemoveAll(dir)
			}
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			_ = os.RemoveAll(dir)
		}
		f.Close()
	}
}

// startPrivateServer initialises a cluster in a new temporary folder and starts postgres on a free loopback
// port, with its unix socket in that folder.
//
// postgres runs as a direct child rather than through pg_ctl's daemon, and gets SIGQUIT (immediate shutdown)
// from the kernel when the test process dies: a test binary that panics or is killed leaves no server
// behind. Running as root, the child processes switch to the "postgres" user (PostgreSQL refuses root).
func startPrivateServer() (*server, error) {
	binDir, err := findBinDir()
	if err != nil {
		return nil, err
	}
	removeStaleDirs()
	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("pgtest: temp dir: %w", err)
	}
	owner, err := claimDir(dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	cred, err := serverCredential(dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	dataDir := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(binDir, "initdb"),
		"--pgdata", dataDir, "--username", "postgres", "--auth", "trust",
		"--encoding", "UTF8", "--locale", "C", "--no-sync")
	initdb.Dir = dir
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("pgtest: initdb: %w\n%s", err, out)
	}

	// A port found free can be taken by another process (another package's test binary) before postgres
	// binds it; try a few.
	var lastErr error
	for range 5 {
		s, err := startPostgres(binDir, dir, dataDir, cred)
		if err == nil {
			s.owner = owner
			return s, nil
		}
		lastErr = err
		if !errors.Is(err, errPortTaken) {
			break
		}
	}
	_ = os.RemoveAll(dir)
	_ = owner.Close()
	return nil, lastErr
}

var errPortTaken = errors.New("port already in use")

func startPostgres(binDir, dir, dataDir string, cred *syscall.Credential) (*server, error) {
	port, err := freeport.Port()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "postgres.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("pgtest: server log: %w", err)
	}
	defer logFile.Close()

	cmd := exec.Command(filepath.Join(binDir, "postgres"),
		"-D", dataDir,
		"-p", strconv.Itoa(port),
		"-k", dir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "max_connections=300",
		// Durability is pointless for throwaway test data and costs seconds per test run.
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
	)
	cmd.Dir = dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("pgtest: start postgres: %w", err)
	}
	s := &server{
		adminURL: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port),
		dir:      dir,
		cmd:      cmd,
		exited:   make(chan struct{}),
	}
	go func() {
		_ = cmd.Wait()
		close(s.exited)
	}()

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	for {
		if err := ping(ctx, s.adminURL); err == nil {
			return s, nil
		}
		select {
		case <-s.exited:
			log, _ := os.ReadFile(logPath)
			if strings.Contains(string(log), "Address already in use") {
				return nil, fmt.Errorf("pgtest: postgres on port %d: %w", port, errPortTaken)
			}
			return nil, fmt.Errorf("pgtest: postgres exited during start:\n%s", log)
		case <-ctx.Done():
			_ = s.stop()
			return nil, fmt.Errorf("pgtest: postgres did not accept connections within %s", startTimeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func ping(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.Ping(ctx)
}

// stop shuts a private server down (fast shutdown: sessions are ended, nothing is flushed that matters)
// and removes its folder. It does nothing for an external server.
func (s *server) stop() error {
	if s.cmd == nil {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Signal(syscall.SIGQUIT)
		<-s.exited
	}
	err := os.RemoveAll(s.dir)
	if s.owner != nil {
		_ = s.owner.Close()
	}
	if err != nil {
		return fmt.Errorf("pgtest: remove %s: %w", s.dir, err)
	}
	return nil
}

// serverCredential returns the identity initdb and postgres run as: the current user, or "postgres" when
// running as root, in which case dir is handed to that user.
func serverCredential(dir string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root needs a \"postgres\" user to run the server as: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgtest: uid of postgres: %w", err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("pgtest: gid of postgres: %w", err)
	}
	if err := os.Chown(dir, int(uid), int(gid)); err != nil {
		return nil, fmt.Errorf("pgtest: hand %s to postgres: %w", dir, err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// findBinDir locates initdb and postgres: `pg_config --bindir` first, then the newest
// /usr/lib/postgresql/*/bin.
func findBinDir() (string, error) {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if isFile(filepath.Join(dir, "initdb")) && isFile(filepath.Join(dir, "postgres")) {
			return dir, nil
		}
	}
	candidates, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	// Highest major version last; numeric order so that 9 does not beat 15.
	best, bestMajor := "", -1
	for _, c := range candidates {
		major, err := strconv.Atoi(filepath.Base(filepath.Dir(c)))
		if err != nil || !isFile(filepath.Join(c, "initdb")) {
			continue
		}
		if major > bestMajor {
			best, bestMajor = c, major
		}
	}
	if best == "" {
		return "", errors.New("pgtest: no PostgreSQL binaries: install PostgreSQL (initdb, postgres) or set " + EnvAdminURL)
	}
	return best, nil
}

func isFile(path string) bool {
	info, err := os.Stat(path)
	return err == nil && !info.IsDir()
}
