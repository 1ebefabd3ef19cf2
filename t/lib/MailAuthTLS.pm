package MailAuthTLS;

# Test certificates made at test time with the openssl CLI (written for this project): a test
# CA, a server certificate for 127.0.0.1, client certificates signed by the CA, and self-signed
# ("rogue") ones. Files go to the test directory as NAME.crt / NAME.key.
#
#   my $tls = MailAuthTLS->new($t->testdir());
#   $tls->ca();                          # ca.crt, ca.key
#   $tls->server('server');              # server.crt for CN/SAN 127.0.0.1
#   $tls->client('alice', '/CN=alice');  # alice.crt, signed by the CA
#   $tls->rogue('rogue', '/CN=alice');   # rogue.crt, self-signed

use warnings;
use strict;

sub new {
	my ($class, $dir) = @_;
	return bless { dir => $dir }, $class;
}

sub openssl {
	my ($self, @args) = @_;
	my $d = $self->{dir};
	system(join(' ', 'openssl', map { "'$_'" } @args) . " >>'$d/openssl.log' 2>&1") == 0
		or die "openssl @args failed, see $d/openssl.log\n";
}

sub ca {
	my ($self) = @_;
	my $d = $self->{dir};
	$self->openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
		'-subj', '/O=ngx-mail-auth test CA/CN=Test CA',
		'-keyout', "$d/ca.key", '-out', "$d/ca.crt");
	return "$d/ca.crt";
}

sub signed {
	my ($self, $name, $subj, $ext) = @_;
	my $d = $self->{dir};
	$self->openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', $subj,
		'-keyout', "$d/$name.key", '-out', "$d/$name.csr");
	open my $fh, '>', "$d/$name.ext" or die "$d/$name.ext: $!\n";
	print $fh $ext;
	close $fh;
	$self->openssl('x509', '-req', '-in', "$d/$name.csr", '-CA', "$d/ca.crt",
		'-CAkey', "$d/ca.key", '-CAcreateserial', '-days', '2',
		'-extfile', "$d/$name.ext", '-out', "$d/$name.crt");
	return "$d/$name.crt";
}

sub server {
	my ($self, $name) = @_;
	return $self->signed($name, '/CN=127.0.0.1', "subjectAltName=IP:127.0.0.1\n");
}

sub client {
	my ($self, $name, $subj) = @_;
	return $self->signed($name, $subj, "basicConstraints=CA:FALSE\n");
}

sub rogue {
	my ($self, $name, $subj) = @_;
	my $d = $self->{dir};
	$self->openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
		'-subj', $subj, '-keyout', "$d/$name.key", '-out', "$d/$name.crt");
	return "$d/$name.crt";
}

# The SHA-1 fingerprint (hex, colons) as nginx's Auth-SSL-Fingerprint reports it.
sub fingerprint {
	my ($self, $name) = @_;
	my $fp = `openssl x509 -in '$self->{dir}/$name.crt' -noout -fingerprint -sha1`;
	$fp =~ s/^.*=//;
	$fp =~ s/\s+//g;
	return $fp;
}

1;
