using Npgsql;
using Rempart.Host.Guardian;

namespace Rempart.Integration.Tests;

/// <summary>
/// The same Guardian on PostgreSQL (a fresh database per run, on the server scripts/test.sh
/// starts and names in REMPART_TEST_POSTGRES): enrol, approve, attest, refuse a replay.
/// </summary>
public sealed class PostgresFlowTests
{
    [Fact]
    public async Task A_host_is_enrolled_approved_and_affirmed_on_PostgreSQL()
    {
        var server = Environment.GetEnvironmentVariable("REMPART_TEST_POSTGRES");
        Assert.False(string.IsNullOrWhiteSpace(server), "REMPART_TEST_POSTGRES is not set: run scripts/postgres.sh and export its output (scripts/test.sh does)");
        var db = "rempart_it_" + Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(6));
        await using (var admin = new NpgsqlConnection(server))
        {
            await admin.OpenAsync();
            await using var create = new NpgsqlCommand($"CREATE DATABASE {db}", admin);
            await create.ExecuteNonQueryAsync();
        }
        var cs = new NpgsqlConnectionStringBuilder(server) { Database = db }.ConnectionString;
        try
        {
            await using var g = await GuardianFixture.StartAsync(postgres: cs);
            using var client = new GuardianClient(g.Url);
            await g.CreateGroupAsync("prod");
            using var host = new SwtpmHost();
            var enrolled = await host.EnrolAsync(client);
            await g.ApproveAsync(enrolled.HostId, "prod");
            var nonce = await client.NonceAsync(enrolled.HostId);
            var evidence = host.Collect(nonce.Nonce).Evidence;
            var ok = await client.AttestAsync(evidence);
            Assert.True(ok.Status == "affirming", string.Join("; ", ok.Failures.Select(f => f.Id)));
            var replay = await client.AttestAsync(evidence);
            Assert.Equal(["attest.nonce"], replay.Failures.Select(f => f.Id));

            // The state and the audit trail are in PostgreSQL.
            await using var c = new NpgsqlConnection(cs);
            await c.OpenAsync();
            await using var q = new NpgsqlCommand("SELECT state FROM hosts WHERE id = @id", c);
            q.Parameters.AddWithValue("id", enrolled.HostId);
            Assert.Equal("healthy", (string?)await q.ExecuteScalarAsync());
            await using var audit = new NpgsqlCommand("SELECT count(*) FROM audit_log", c);
            Assert.True((long)(await audit.ExecuteScalarAsync())! >= 4);
        }
        finally
        {
            NpgsqlConnection.ClearAllPools();
            await using var admin = new NpgsqlConnection(server);
            await admin.OpenAsync();
            await using var drop = new NpgsqlCommand($"DROP DATABASE IF EXISTS {db} WITH (FORCE)", admin);
            await drop.ExecuteNonQueryAsync();
        }
    }
}
