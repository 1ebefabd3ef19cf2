package Test::Nginx;

# Our own small implementation of the part of the nginx test suite's Test::Nginx API that the
# tests in t/ use (written for this project). The tests run unchanged with the official harness:
#
#     prove -I /path/to/nginx-tests/lib t/
#
# because every t/*.t adds t/lib at the END of @INC (push, not `use lib`): a harness given with
# -I is found first; without one, this file is used.
#
# Environment, as in the official suite:
#   TEST_NGINX_BINARY   nginx to run (default: nginx in PATH)
#   TEST_NGINX_GLOBALS  extra main-context directives (how `load_module` gets in)
#   TEST_NGINX_GLOBALS_HTTP  extra http-context directives
#   TEST_NGINX_LEAVE    keep the test directory
#   TEST_NGINX_VERBOSE  log what the harness does (to stderr)
#   TEST_NGINX_CATLOG   print error.log at the end
#   TEST_NGINX_VALGRIND run nginx under valgrind (memcheck); its findings go to error.log-style
#                       files valgrind.*.log in the test directory and fail the alert check

use warnings;
use strict;

use base qw/ Exporter /;

our @EXPORT = qw/ log_in log_out http http_get http_head port /;
our @EXPORT_OK = qw/ http_start http_end http_content /;
our %EXPORT_TAGS = (gzip => [], SSL => []);

use File::Path qw/ rmtree /;
use File::Temp qw/ tempdir /;
use IO::Socket::INET;
use POSIX qw/ WNOHANG /;
use Socket qw/ CRLF /;
use Test::More qw//;

our $NGINX = defined $ENV{TEST_NGINX_BINARY} ? $ENV{TEST_NGINX_BINARY} : 'nginx';
our %ports;

sub verbose { print STDERR "# harness: @_\n" if $ENV{TEST_NGINX_VERBOSE}; }

sub new {
	my $self = bless {}, shift;
	$self->{_pid} = $$;
	$self->{_alerts} = 1;
	$self->{_testdir} = tempdir('nginx-test-XXXXXXXXXX', TMPDIR => 1)
		or die "Can't create temp directory: $!\n";
	Test::More::BAIL_OUT("no $NGINX binary found (set TEST_NGINX_BINARY)")
		unless -x $NGINX or grep { -x "$_/$NGINX" } split /:/, $ENV{PATH};
	# nginx workers run as "nobody" when the tests run as root: let them reach the files
	chmod 0755, $self->{_testdir};
	verbose("testdir $self->{_testdir}");
	return $self;
}

sub DESTROY {
	my ($self) = @_;
	local $?;
	return if $self->{_pid} != $$;

	$self->stop();
	$self->stop_daemons();

	if (Test::More->builder->expected_tests) {
		local $Test::Nginx::TODO = 'alerts' unless $self->{_alerts};
		my @alerts = $self->read_file('error.log') =~ /.+\[(?:alert|emerg|crit)\].+/gm;
		push @alerts, $self->valgrind_errors();
		Test::More::is(join("\n", @alerts), '', 'no alerts');
	}
	if (Test::More->builder->expected_tests) {
		my $errors = join "\n", $self->read_file('error.log') =~ /.+Sanitizer.+/gm;
		Test::More::is($errors, '', 'no sanitizer errors');
	}

	system("cat $self->{_testdir}/error.log") if $ENV{TEST_NGINX_CATLOG};
	if ($ENV{TEST_NGINX_LEAVE}) {
		Test::More::diag("left test directory $self->{_testdir}");
	} else {
		eval { rmtree($self->{_testdir}); };
	}
}

sub valgrind_errors {
	my ($self) = @_;
	return () unless $ENV{TEST_NGINX_VALGRIND};
	my @out;
	for my $f (glob "$self->{_testdir}/valgrind.*.log") {
		open my $fh, '<', $f or next;
		local $/;
		my $log = <$fh>;
		# With -q memcheck prints nothing but its findings: each error ("Invalid read of
		# size 8", "Conditional jump ... uninitialised value", ...) and each definite leak
		# ("N bytes in M blocks are definitely lost in loss record ..."), each with its stack.
		# Every error counts. A leak counts when its stack passes through this module
		# (--keep-debuginfo names our frames even after nginx unloaded the .so); nginx's
		# own exit-time leaks (ngx_event_process_init, ngx_set_environment) are noted only.
		for my $report (split /\n(?===\d+== \S)/, $log) {
			next unless $report =~ /^==\d+== (\S.*)/;
			my $first = $1;
			next if $first =~ /^(?:Warning|warning|WARNING):|^could not unlink /;
			if ($first =~ /definitely lost/
				&& $report !~ /mail_auth|ngx_http_mail_auth_module/)
			{
				Test::More::note("valgrind, not this module: $first");
				next;
			}
			push @out, "$f: $first";
		}
	}
	return @out;
}

sub nginx_v {
	my ($self) = @_;
	$self->{_configure_args} = `$NGINX -V 2>&1` unless defined $self->{_configure_args};
	return $self->{_configure_args};
}

sub has($;) {
	my ($self, @features) = @_;
	foreach my $feature (@features) {
		Test::More::plan(skip_all => "no $feature available")
			unless $self->has_module($feature) or $self->has_feature($feature);
	}
	return $self;
}

# Modules by name as nginx -V shows them: built-in ones unless --without-..., optional ones
# with --with-..., dynamic ones via load_module in TEST_NGINX_GLOBALS.
my %modules = (
	http => 'http', mail => '--with-mail((?!\S)|=dynamic)', stream => '--with-stream((?!\S)|=dynamic)',
	imap => '--without-mail_imap_module', pop3 => '--without-mail_pop3_module',
	smtp => '--without-mail_smtp_module', ssl => '--with-http_ssl_module',
	mail_ssl => '--with-mail_ssl_module', auth_request => '--with-http_auth_request_module',
	auth_basic => '--without-http_auth_basic_module', proxy => '--without-http_proxy_module',
	rewrite => '--without-http_rewrite_module', map => '--without-http_map_module',
	ssi => '--without-http_ssi_module',
	realip => '--with-http_realip_module', http_v2 => '--with-http_v2_module',
	debug => '--with-debug', cryptx => '', socket_ssl => '',
);
my %without = map { $_ => 1 } qw/ imap pop3 smtp auth_basic proxy rewrite map ssi /;

sub has_module($) {
	my ($self, $feature) = @_;
	my $v = $self->nginx_v();
	if ($feature eq 'http') {
		return $v !~ /--without-http(?!\S)/;
	}
	if ($without{$feature}) {
		return 0 if $feature =~ /^(imap|pop3|smtp)$/ and $v !~ /--with-mail/;
		return $v !~ /$modules{$feature}/;
	}
	return 0 unless defined $modules{$feature} and length $modules{$feature};
	return 1 if $v =~ /$modules{$feature}/;
	# dynamic module loaded through TEST_NGINX_GLOBALS
	return 1 if defined $ENV{TEST_NGINX_GLOBALS}
		and $ENV{TEST_NGINX_GLOBALS} =~ /load_module\s+[^;]*\Q$feature\E/;
	return 0;
}

sub has_feature($) {
	my ($self, $feature) = @_;
	return 1 if $feature eq 'unix';
	return $self->nginx_v() =~ /--with-threads/ if $feature eq 'threads';
	return eval { require IO::Socket::SSL; 1 } if $feature eq 'socket_ssl';
	return 0;
}

sub has_version($) {
	my ($self, $need) = @_;
	$self->nginx_v() =~ m!nginx version: [^/]+/([\d.]+)! or die "no version\n";
	my @v = split /\./, $1;
	for my $n (split /\./, $need) {
		my $have = shift @v // 0;
		return 1 if $have > $n;
		return 0 if $have < $n;
	}
	return 1;
}

sub has_daemon($) {
	my ($self, $daemon) = @_;
	Test::More::plan(skip_all => "$daemon not found")
		unless grep { -x "$_/$daemon" } split /:/, $ENV{PATH};
	return $self;
}

sub plan($) {
	my ($self, $plan) = @_;
	Test::More::plan(tests => $plan + 2);
	return $self;
}

sub todo_alerts() {
	my ($self) = @_;
	$self->{_alerts} = 0;
	return $self;
}

sub try_run($$) {
	my ($self, $message) = @_;
	eval {
		open OLDERR, '>&', \*STDERR;
		open STDERR, '>', '/dev/null';
		$self->run();
	};
	open STDERR, '>&', \*OLDERR;
	return $self unless $@;
	if ($ENV{TEST_NGINX_VERBOSE}) {
		verbose("try_run failed: $@");
		system("cat $self->{_testdir}/error.log >&2");
	}
	Test::More::plan(skip_all => $message);
	return $self;
}

sub run(;$) {
	my ($self, $conf) = @_;
	my $testdir = $self->{_testdir};

	if (defined $conf) {
		open my $fh, '<', $conf or die "Can't open $conf: $!\n";
		local $/;
		$self->write_file_expand('nginx.conf', <$fh>);
	}

	my $pid = fork();
	die "Unable to fork(): $!\n" unless defined $pid;

	if ($pid == 0) {
		# as the official harness: a config that did not take %%TEST_GLOBALS%% gets the test
		# directory's pid and error log on the command line
		my @globals = $self->{_test_globals} ? () : ('-g', "pid $testdir/nginx.pid; "
			. "error_log $testdir/error.log debug;");
		my @cmd = ($NGINX, '-p', "$testdir/", '-c', 'nginx.conf', '-e', 'error.log', @globals);
		if ($ENV{TEST_NGINX_VALGRIND}) {
			unshift @cmd, 'valgrind', '-q', '--trace-children=yes',
				'--leak-check=full', '--show-leak-kinds=definite', '--keep-debuginfo=yes',
				"--log-file=$testdir/valgrind.%p.log";
		}
		verbose("exec @cmd");
		exec(@cmd) or die "Unable to exec(): $!\n";
	}

	my $timeout = $ENV{TEST_NGINX_VALGRIND} ? 600 : 50;
	$self->waitforfile("$testdir/nginx.pid", $pid, $timeout)
		or die "Can't start nginx\n";
	$self->{_started} = 1;
	return $self;
}

sub port {
	my ($num, %opts) = @_;
	goto done if defined $ports{$num};

	my ($lock, $sock, $port);
	for my $try (1 .. 20) {
		$port = $try == 1 ? $num : 10000 + int(rand(40000));
		# a UDP "lock" socket keeps the number ours; the TCP probe proves it is free now
		$lock = IO::Socket::INET->new(Proto => 'udp', LocalAddr => "127.0.0.1:$port") or next;
		$sock = IO::Socket::INET->new(Proto => 'tcp', LocalAddr => "127.0.0.1:$port",
			Listen => 1, ReuseAddr => 1) and last;
	}
	die "Port limit exceeded\n" unless defined $lock and defined $sock;
	close $sock;
	$ports{$num} = { port => $port, socket => $lock };
done:
	return $ports{$num}{socket} if $opts{socket};
	return $ports{$num}{port};
}

sub waitforfile($;$$) {
	my ($self, $file, $pid, $timeout) = @_;
	$timeout //= 50;
	my $exited;
	for (1 .. $timeout * 10) {
		return 1 if -e $file;
		return 0 if $exited;
		$exited = waitpid($pid, WNOHANG) != 0 if $pid;
		select undef, undef, undef, 0.1;
	}
	return undef;
}

sub waitforsocket($) {
	my ($self, $peer) = @_;
	for (1 .. 100) {
		my $s = IO::Socket::INET->new(Proto => 'tcp', PeerAddr => $peer);
		return 1 if defined $s;
		select undef, undef, undef, 0.1;
	}
	return undef;
}

sub reload() {
	my ($self) = @_;
	return $self unless $self->{_started};
	my $pid = $self->read_file('nginx.pid');
	kill 'HUP', $pid;
	return $self;
}

sub stop() {
	my ($self) = @_;
	return $self unless $self->{_started};
	my $pid = $self->read_file('nginx.pid');
	chomp $pid;
	kill 'QUIT', $pid;
	my $exited;
	for (1 .. 900) {
		$exited = waitpid($pid, WNOHANG) != 0;
		last if $exited;
		select undef, undef, undef, 0.1;
	}
	if (!$exited) {
		kill 'TERM', $pid;
		waitpid($pid, 0);
	}
	$self->{_started} = 0;
	return $self;
}

sub stop_daemons() {
	my ($self) = @_;
	while ($self->{_daemons} && @{$self->{_daemons}}) {
		my $p = shift @{$self->{_daemons}};
		kill 'TERM', $p;
		my $exited;
		for (1 .. 50) {
			$exited = waitpid($p, WNOHANG) != 0;
			last if $exited;
			select undef, undef, undef, 0.1;
		}
		if (!$exited) {
			kill 'KILL', $p;
			waitpid($p, 0);
		}
	}
	return $self;
}

sub read_file($) {
	my ($self, $name) = @_;
	open my $fh, '<', "$self->{_testdir}/$name" or return '';
	local $/;
	my $content = <$fh>;
	return defined $content ? $content : '';
}

sub write_file($$) {
	my ($self, $name, $content) = @_;
	open my $fh, '>', "$self->{_testdir}/$name" or die "Can't create $name: $!\n";
	binmode $fh;
	print $fh $content;
	close $fh;
	return $self;
}

sub write_file_expand($$) {
	my ($self, $name, $content) = @_;
	$content =~ s/%%TEST_GLOBALS%%/$self->test_globals()/gmse;
	$content =~ s/%%TEST_GLOBALS_HTTP%%/$self->test_globals_http()/gmse;
	$content =~ s/%%TEST_GLOBALS_STREAM%%//gms;
	$content =~ s/%%TESTDIR%%/$self->{_testdir}/gms;
	$content =~ s/127\.0\.0\.1:(8\d\d\d)/'127.0.0.1:' . port($1)/gmse;
	$content =~ s/%%PORT_(\d+)%%/port($1)/gmse;
	return $self->write_file($name, $content);
}

sub run_daemon($;@) {
	my ($self, $code, @args) = @_;
	my $pid = fork();
	die "Can't fork daemon: $!\n" unless defined $pid;
	if ($pid == 0) {
		if (ref($code) eq 'CODE') {
			$code->(@args);
			exit 0;
		}
		exec($code, @args);
		exit 0;
	}
	push @{$self->{_daemons}}, $pid;
	return $self;
}

sub testdir() {
	my ($self) = @_;
	return $self->{_testdir};
}

sub test_globals() {
	my ($self) = @_;
	$self->{_test_globals} = 1;
	my $s = "pid $self->{_testdir}/nginx.pid;\n"
		. "error_log $self->{_testdir}/error.log debug;\n";
	$s .= $ENV{TEST_NGINX_GLOBALS} if $ENV{TEST_NGINX_GLOBALS};
	return $s;
}

sub test_globals_http() {
	my ($self) = @_;
	my $s = "access_log off;\n"
		. "client_body_temp_path $self->{_testdir}/client_body_temp;\n"
		. "proxy_temp_path $self->{_testdir}/proxy_temp;\n"
		. "fastcgi_temp_path $self->{_testdir}/fastcgi_temp;\n"
		. "uwsgi_temp_path $self->{_testdir}/uwsgi_temp;\n"
		. "scgi_temp_path $self->{_testdir}/scgi_temp;\n";
	$s .= $ENV{TEST_NGINX_GLOBALS_HTTP} if $ENV{TEST_NGINX_GLOBALS_HTTP};
	return $s;
}

###############################################################################

sub log_core {
	my ($prefix, $msg) = @_;
	return unless $ENV{TEST_NGINX_VERBOSE};
	($prefix, $msg) = ('', $prefix) unless defined $msg;
	$prefix .= ' ' if length $prefix;
	$msg =~ s/^/# $prefix/gm;
	$msg =~ s/([^\x20-\x7e\n])/sprintf('\\x%02x', ord($1))/gme;
	$msg .= "\n" unless $msg =~ /\n\Z/;
	print STDERR $msg;
}

sub log_out { log_core('>>', @_); }
sub log_in { log_core('<<', @_); }

sub http_get($;%) {
	my ($url, %extra) = @_;
	return http(<<EOF, %extra);
GET $url HTTP/1.0
Host: localhost

EOF
}

sub http_head($;%) {
	my ($url, %extra) = @_;
	return http(<<EOF, %extra);
HEAD $url HTTP/1.0
Host: localhost

EOF
}

sub http($;%) {
	my ($request, %extra) = @_;
	my $s = http_start($request, %extra);
	return $s if $extra{start} or !ref $s;
	return http_end($s);
}

sub http_start($;%) {
	my ($request, %extra) = @_;
	my $s;
	eval {
		local $SIG{ALRM} = sub { die "timeout\n" };
		alarm(8);
		$s = $extra{socket} || IO::Socket::INET->new(
			Proto => 'tcp',
			PeerAddr => '127.0.0.1:' . port(8080),
		) or die "Can't connect to nginx: $!\n";
		log_out($request);
		$s->print($request);
		alarm(0);
	};
	alarm(0);
	if ($@) {
		log_in("died: $@");
		return undef;
	}
	return $s;
}

sub http_end($;%) {
	my ($s) = @_;
	my $reply;
	eval {
		local $SIG{ALRM} = sub { die "timeout\n" };
		alarm(8);
		local $/;
		$reply = $s->getline();
		$s->close();
		alarm(0);
	};
	alarm(0);
	if ($@) {
		log_in("died: $@");
		return undef;
	}
	log_in($reply);
	return $reply;
}

sub http_content {
	my ($text) = @_;
	return undef unless defined $text;
	$text =~ /(.*?)\x0d\x0a?\x0d\x0a?(.*)/ms;
	return $2;
}

1;
