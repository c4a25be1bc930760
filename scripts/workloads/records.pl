# Perl: 1.5 M hash records, 1 in 64 kept, the rest deleted; wait; signal idle.
my $wait = $ARGV[0] // 0;
my %recs;
$recs{$_} = { id => $_, name => "user$_", tags => ["a" . ($_ % 97), "b"] } for 0 .. 1_499_999;
for my $k (keys %recs) { delete $recs{$k} if $k % 64 }
sleep $wait;
kill "USR1", $ENV{HUGEGUARD_INSPECT_PID} if $ENV{HUGEGUARD_INSPECT_PID};
sleep 1000 while 1;
