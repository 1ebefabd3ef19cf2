package Test::Nginx::Mail;

# Shared code of our Test::Nginx::IMAP / POP3 / SMTP clients (written for this project; same
# methods as the official nginx test suite's clients).

use warnings;
use strict;

use IO::Socket::INET;
use IO::Select;
use Test::More qw//;
use Test::Nginx qw/ port /;

sub connect_client {
	my ($class, $default_port, %args) = @_;
	my $self = bless {}, $class;
	my $peer = delete $args{PeerAddr} || '127.0.0.1:' . port($default_port);
	$self->{_socket} = IO::Socket::INET->new(
		Proto => 'tcp', PeerAddr => $peer, Timeout => 5, %args,
	) or die "Can't connect to $peer: $!\n";
	$self->{_socket}->autoflush(1);
	$self->{_read_buffer} = '';
	return $self;
}

sub eof {
	my $self = shift;
	return $self->{_socket}->eof();
}

sub print {
	my ($self, $cmd) = @_;
	Test::Nginx::log_out($cmd);
	$self->{_socket}->print($cmd);
}

sub send {
	my ($self, $cmd) = @_;
	$self->print($cmd . "\r\n");
}

# one line, or undef on timeout (8 s) / close
sub getline {
	my ($self) = @_;
	my $socket = $self->{_socket};
	my $line;
	eval {
		local $SIG{ALRM} = sub { die "timeout\n" };
		alarm(8);
		$line = $socket->getline();
		alarm(0);
	};
	alarm(0);
	Test::Nginx::log_in($line) if defined $line;
	return $line;
}

sub read {
	my ($self) = @_;
	return $self->getline();
}

sub check {
	my ($self, $regex, $name) = @_;
	my $line = $self->read();
	Test::More->builder->like(defined $line ? $line : '', $regex, $name);
}

sub can_read {
	my ($self, $timo) = @_;
	return IO::Select->new($self->{_socket})->can_read($timo || 3);
}

sub socket {
	my ($self) = @_;
	return $self->{_socket};
}

1;
