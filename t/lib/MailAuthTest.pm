package MailAuthTest;

# Helpers shared by the t/*.t tests of ngx-mail-auth (written for this project).

use warnings;
use strict;

use base qw/ Exporter /;
our @EXPORT = qw/ have_tool make_hash real_client sasl_client auth_http wait_for
	workers_can_read run_tool /;

use FindBin;
use POSIX qw//;
use Test::Nginx qw/ http /;

sub have_tool {
	my ($tool) = @_;
	return scalar grep { -x "$_/$tool" } split /:/, $ENV{PATH};
}

# A stored password made by a real tool:
#   htpasswd-B (cost 5), htpasswd-m (apr1), htpasswd-s ({SHA}), openssl-6, openssl-5,
#   openssl-1, openssl-apr1, doveadm-SCHEME (e.g. doveadm-SSHA512)
# Returns undef when the tool is missing.
sub make_hash {
	my ($kind, $password) = @_;
	my @cmd;
	if ($kind =~ /^htpasswd-(B|m|s)$/) {
		return undef unless have_tool('htpasswd');
		@cmd = ('htpasswd', '-nb' . $1, ($1 eq 'B' ? ('-C', '5') : ()), 'u', $password);
	} elsif ($kind =~ /^openssl-(\w+)$/) {
		return undef unless have_tool('openssl');
		@cmd = ('openssl', 'passwd', "-$1", $password);
	} elsif ($kind =~ /^doveadm-([\w.-]+)$/) {
		return undef unless have_tool('doveadm');
		@cmd = ('doveadm', '-o', 'stats_writer_socket_path=', 'pw', '-s', $1, '-p', $password);
	} else {
		die "unknown hash kind $kind\n";
	}
	open my $fh, '-|', @cmd or return undef;
	local $/;
	my $out = <$fh>;
	close $fh;
	return undef if $? != 0 or !defined $out;
	$out =~ s/\s+\z//;
	$out =~ s/^u:// if $kind =~ /^htpasswd/;
	return $out;
}

# Runs a real client (t/lib/mail_client.py: imaplib/poplib/smtplib). Returns (exit code, output).
sub real_client {
	return python_client('mail_client.py', @_);
}

# t/lib/sasl_client.py: APOP, CRAM-MD5, EXTERNAL, SMTP sending, IMAP FETCH / POP3 RETR, TLS.
sub sasl_client {
	return python_client('sasl_client.py', @_);
}

sub python_client {
	my ($script, @args) = @_;
	open my $fh, '-|', 'python3', "$FindBin::Bin/lib/$script", @args
		or return (2, "cannot run python3: $!");
	local $/;
	my $out = <$fh> // '';
	close $fh;
	return ($? >> 8, $out);
}

# Runs a command without a shell (arguments as they are: passwords with quotes or spaces),
# stdin from /dev/null. Returns (exit code, stdout and stderr together); 127: not run.
sub run_tool {
	my (@cmd) = @_;
	my $pid = open(my $fh, '-|');
	return (127, "fork: $!") unless defined $pid;
	if ($pid == 0) {
		open STDERR, '>&', \*STDOUT;
		open STDIN, '<', '/dev/null';
		{ no warnings qw/ exec /; exec { $cmd[0] } @cmd; }
		syswrite STDOUT, "cannot run $cmd[0]: $!\n";
		POSIX::_exit(127);    # no END blocks, no destructors in the child
	}
	local $/;
	my $out = <$fh> // '';
	close $fh;
	return ($? >> 8, $out);
}

# A raw auth_http request to the module, as nginx mail would send it. %h: header => value.
sub auth_http {
	my ($uri, %h) = @_;
	my $req = "GET $uri HTTP/1.0\r\nHost: localhost\r\n";
	$req .= "$_: $h{$_}\r\n" for sort keys %h;
	return http($req . "\r\n");
}

# nginx workers run as "nobody" when the tests run as root; the official harness makes the test
# directory 0700. Make it traversable (files are written 0644 under the usual umask).
sub workers_can_read {
	my ($t) = @_;
	chmod 0755, $t->testdir();
	return $t;
}

# Polls $check->() every 0.1 s for up to $secs; returns its last value.
sub wait_for {
	my ($secs, $check) = @_;
	my $v;
	for (1 .. $secs * 10) {
		$v = $check->();
		return $v if $v;
		select undef, undef, undef, 0.1;
	}
	return $v;
}

1;
