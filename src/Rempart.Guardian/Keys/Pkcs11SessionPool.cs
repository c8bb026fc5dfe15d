using System.Collections.Concurrent;
using Net.Pkcs11Interop.Common;
using Net.Pkcs11Interop.HighLevelAPI;
using ISession = Net.Pkcs11Interop.HighLevelAPI.ISession;
using Rempart.KeyProtection;

namespace Rempart.Guardian.Keys;

/// <summary>
/// Read-write sessions on one token, each used by one thread at a time (PKCS#11 v2.40 §6.6.3: a
/// session is not to be shared by concurrent calls). At most <c>max</c> are open; a caller waits for
/// a free one. A session the token dropped (closed, device removed, logged out) is discarded and a
/// new one opened and logged in on the next use. The PIN is held only to log new sessions in.
/// </summary>
internal sealed class Pkcs11SessionPool : IDisposable
{
    private static readonly CKR[] Broken =
    [
        CKR.CKR_SESSION_HANDLE_INVALID, CKR.CKR_SESSION_CLOSED, CKR.CKR_DEVICE_REMOVED, CKR.CKR_TOKEN_NOT_PRESENT,
        CKR.CKR_USER_NOT_LOGGED_IN, CKR.CKR_DEVICE_ERROR,
    ];

    private readonly ISlot _slot;
    private readonly byte[] _pin;
    private readonly string _token;
    private readonly SemaphoreSlim _gate;
    private readonly ConcurrentBag<ISession> _idle = [];
    private bool _disposed;

    public Pkcs11SessionPool(ISlot slot, string token, byte[] pin, int max)
    {
        _slot = slot;
        _token = token;
        _pin = pin;
        _gate = new SemaphoreSlim(max, max);
    }

    public T Use<T>(Func<ISession, T> action)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _gate.Wait();
        ISession? session = null;
        try
        {
            session = _idle.TryTake(out var s) ? s : Open();
            var result = action(session);
            _idle.Add(session);
            session = null;
            return result;
        }
        catch (Pkcs11Exception e) when (session is not null && Broken.Contains(e.RV))
        {
            try
            {
                session.Dispose();
            }
            catch (Pkcs11Exception)
            {
            }
            session = null;
            throw;
        }
        finally
        {
            if (session is not null)
            {
                _idle.Add(session); // a failed operation on a healthy session
            }
            _gate.Release();
        }
    }

    private ISession Open()
    {
        var session = _slot.OpenSession(SessionType.ReadWrite);
        try
        {
            session.Login(CKU.CKU_USER, _pin);
        }
        catch (Pkcs11Exception e) when (e.RV == CKR.CKR_USER_ALREADY_LOGGED_IN)
        {
            // Login state is per application and token: another session already logged in.
        }
        catch (Pkcs11Exception e)
        {
            session.Dispose();
            throw e.RV switch
            {
                CKR.CKR_PIN_INCORRECT => new KeyProviderException("keys.pkcs11.pin-wrong",
                    $"the token '{_token}' refused the user PIN from the PIN file: check --pkcs11-pin-file (the token locks the PIN after repeated failures)"),
                CKR.CKR_PIN_LOCKED => new KeyProviderException("keys.pkcs11.pin-locked",
                    $"the user PIN of token '{_token}' is locked: its security officer must unlock it (softhsm2-util/pkcs11-tool --init-pin)"),
                _ => new KeyProviderException("keys.pkcs11.login", $"cannot log in to token '{_token}' ({e.RV})", e),
            };
        }
        return session;
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        while (_idle.TryTake(out var s))
        {
            try
            {
                s.Dispose();
            }
            catch (Pkcs11Exception)
            {
            }
        }
        System.Security.Cryptography.CryptographicOperations.ZeroMemory(_pin);
        _gate.Dispose();
    }
}
