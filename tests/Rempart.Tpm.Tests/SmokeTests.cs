using Rempart.Tpm.Tests.Infrastructure;
using Rempart.Tpm.Structures;

namespace Rempart.Tpm.Tests;

public sealed class SmokeTests : IDisposable
{
    private readonly Swtpm _tpm = new();

    public void Dispose() => _tpm.Dispose();

    [Fact]
    public void Properties_name_the_IBM_swtpm_and_pcr_read_matches_tpm2_pcrread()
    {
        PcrValues values;
        using (var c = _tpm.Client())
        {
            var props = c.GetTpmProperties();
            Assert.Equal(0x49424D00u, props[TpmPt.Manufacturer]); // "IBM\0", swtpm's manufacturer id
            values = c.PcrRead(TpmlPcrSelection.Of(TpmAlgId.Sha256, Enumerable.Range(0, 24).ToArray()));
        }

        // swtpm serves one connection at a time: ours is closed before tpm2-tools connects.
        Assert.Equal(24, values.Banks[TpmAlgId.Sha256].Count);
        var tool = _tpm.Tpm2("tpm2_pcrread", "sha256:23").Ok().Stdout;
        Assert.Contains("0x" + Convert.ToHexString(values[TpmAlgId.Sha256, 23]), tool);
    }
}
